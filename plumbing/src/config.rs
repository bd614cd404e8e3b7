//! Settings defaults taken from their clap definitions, so a default is
//! written once (in the `#[arg]` attribute) and tests, the demo and
//! benchmarks cannot drift from what the binary does.

/// `T` with every setting at its declared default, as if the command line
/// and the environment were empty (environment variables are ignored, so
/// a developer's shell cannot change what a test runs with).
///
/// Panics if `T` has a required setting without a default: a programming
/// error in the settings type, caught by its tests.
pub fn defaults<T: clap::Args + clap::FromArgMatches>() -> T {
    let cmd = T::augment_args(clap::Command::new("defaults").no_binary_name(true)).mut_args(|a| a.env(None::<&str>));
    let matches = cmd.try_get_matches_from(std::iter::empty::<String>()).expect("every setting has a default");
    T::from_arg_matches(&matches).expect("defaults parse into their settings type")
}

#[cfg(test)]
mod tests {
    #[derive(Debug, clap::Args)]
    struct Sample {
        #[arg(long, env = "TOKENUSAGE_SAMPLE_LIMIT", default_value_t = 7)]
        limit: u32,
        #[arg(long)]
        name: Option<String>,
    }

    #[test]
    fn defaults_come_from_the_definitions_and_ignore_the_environment() {
        let s: Sample = super::defaults();
        assert_eq!((s.limit, s.name), (7, None));
    }
}
