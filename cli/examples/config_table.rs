//! Prints the configuration table for README.md: `cargo run -q --example config_table`.

fn main() {
    println!("| variable | default | meaning |");
    println!("|---|---|---|");
    for (name, help, default) in tokenusage::env_vars() {
        let help = help.replace('\n', " ").replace('|', "\\|");
        let default = default.map(|d| format!("`{d}`")).unwrap_or_else(|| "—".into());
        println!("| `{name}` | {default} | {help} |");
    }
}
