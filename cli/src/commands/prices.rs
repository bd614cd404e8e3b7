//! `tokenusage prices ...`: the price book's command line (`pricing` owns
//! the book; re-pricing what was counted is `reprice`).
//! Every change is written to the audit trail.

use std::io::Read;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use tokenusage_contract::money;
use tokenusage_plumbing::DatabaseArgs;
use tokenusage_pricing::import::{self, ImportOptions};
use tokenusage_pricing::{Entry, Kind, Price, store};

use super::audit_cli as audit;
use super::rebuild::parse_time;

#[derive(Debug, clap::Subcommand)]
pub enum PricesCmd {
    /// List the price book (prices per million tokens, in the book's currency).
    List {
        /// Only entries for this exact model name or pattern.
        #[arg(long)]
        model: Option<String>,
        /// Show which entry prices MODEL at this time (RFC 3339 or YYYY-MM-DD), with the lookup rules applied.
        #[arg(long, value_parser = parse_time, requires = "model")]
        at: Option<DateTime<Utc>>,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Add or correct one dated price. Prices are per million tokens in the
    /// book's currency, as decimal text ("2.5"); kinds left out have no
    /// price (their tokens stay unpriced), except reasoning, priced as output.
    Set(Box<SetArgs>),
    /// Remove one entry by id (see `prices list`).
    Remove {
        id: i64,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Import a catalogue: LiteLLM's model_prices_and_context_window.json,
    /// models.dev's api.json, or a `prices export` file. Entries with the
    /// same model and date are replaced.
    Import {
        /// The file, or - for standard input.
        file: String,
        /// In force from, for catalogues that carry no dates (LiteLLM, models.dev).
        #[arg(long, value_parser = parse_time)]
        effective_from: Option<DateTime<Utc>>,
        /// Read and report; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Import the valid entries even if some are invalid (by default an
        /// invalid entry means nothing is imported).
        #[arg(long)]
        skip_invalid: bool,
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Print the whole book in the `tokenusage.prices.v1` format (what `import` reads back).
    Export {
        #[command(flatten)]
        db: DatabaseArgs,
    },
}

#[derive(Debug, clap::Args)]
pub struct SetArgs {
    /// Exact model name, or a pattern where `*` matches any characters.
    model: String,
    /// In force from (RFC 3339 or YYYY-MM-DD, UTC).
    #[arg(long, value_parser = parse_time)]
    from: DateTime<Utc>,
    /// In force until (exclusive); open-ended if left out.
    #[arg(long, value_parser = parse_time)]
    to: Option<DateTime<Utc>>,
    #[arg(long)]
    input: Option<String>,
    #[arg(long)]
    output: Option<String>,
    #[arg(long)]
    cache_read: Option<String>,
    /// Cache writes at the default (5-minute) rate.
    #[arg(long)]
    cache_write: Option<String>,
    #[arg(long)]
    cache_write_1h: Option<String>,
    #[arg(long)]
    reasoning: Option<String>,
    #[arg(long)]
    audio_input: Option<String>,
    #[arg(long)]
    audio_output: Option<String>,
    #[arg(long)]
    image_input: Option<String>,
    #[arg(long)]
    image_output: Option<String>,
    /// A long-context price: a request whose input is more than this many
    /// tokens is priced whole at the --long-context prices (with --long-context).
    #[arg(long, requires = "long_context", value_parser = clap::value_parser!(i64).range(1..))]
    long_context_above: Option<i64>,
    /// The long-context prices per million tokens, KIND=PRICE comma-separated
    /// (e.g. input=6,output=22.5,cache_read=0.6); kinds left out keep the prices above.
    #[arg(long, requires = "long_context_above")]
    long_context: Option<String>,
    /// A service tier's prices per million tokens, TIER:KIND=PRICE,...
    /// (e.g. batch:input=1.25,output=5); TIER is batch, flex or priority;
    /// kinds left out keep the prices above. Repeat for each tier.
    #[arg(long = "service-tier", value_name = "TIER:PRICES")]
    service_tiers: Vec<String>,
    /// The price of one web search request (e.g. 0.01).
    #[arg(long)]
    web_search: Option<String>,
    /// Where the price comes from (a price page's URL, a contract).
    #[arg(long)]
    source: String,
    /// Re-price the stored events from --from (to --to or now) right away.
    #[arg(long)]
    reprice: bool,
    #[command(flatten)]
    db: DatabaseArgs,
}

fn price_text(n: Option<i64>) -> String {
    n.map(money::format_nanos).unwrap_or_else(|| "-".into())
}

/// `input=6,output=22.5`: prices per million tokens by kind, exactly.
fn parse_tier_prices(list: &str) -> Result<Price, String> {
    let mut price = Price::default();
    for part in list.split(',') {
        let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} is not KIND=PRICE"))?;
        let kind = Kind::parse(k.trim()).ok_or_else(|| format!("unknown token kind {:?}", k.trim()))?;
        if price.own(kind).is_some() {
            return Err(format!("{} is given twice", kind.name()));
        }
        price.set(kind, Some(Price::parse_per_million(v.trim()).map_err(|why| format!("{}: {why}", kind.name()))?));
    }
    Ok(price)
}

fn print_entries(currency: &str, entries: &[Entry]) {
    println!("prices in {currency} per million tokens ('-': no price; reasoning '-' is priced as output)");
    println!(
        "{:>6} {:<40} {:<20} {:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  source",
        "id", "model", "from", "to", "input", "output", "c.read", "c.write", "c.w.1h", "reason"
    );
    let t = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for e in entries {
        let p = |k: Kind| price_text(e.price.own(k));
        println!(
            "{:>6} {:<40} {:<20} {:<20} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
            e.id.unwrap_or_default(),
            e.model,
            t(e.effective_from),
            e.effective_to.map(t).unwrap_or_else(|| "-".into()),
            p(Kind::Input),
            p(Kind::Output),
            p(Kind::CacheRead),
            p(Kind::CacheWrite),
            p(Kind::CacheWrite1h),
            p(Kind::Reasoning),
            e.source
        );
        // Every other price the entry has: the kinds not in the columns,
        // and the long-context tier.
        let rest: Vec<String> = [Kind::AudioInput, Kind::AudioOutput, Kind::ImageInput, Kind::ImageOutput]
            .into_iter()
            .filter_map(|k| e.price.own(k).map(|n| format!("{} {}", k.name(), money::format_nanos(n))))
            .collect();
        if !rest.is_empty() {
            println!("{:>6} also: {}", "", rest.join(", "));
        }
        if let Some(tier) = &e.long_context {
            let tier_prices: Vec<String> =
                tier.price.named().map(|(k, n)| format!("{} {}", k.name(), money::format_nanos(n))).collect();
            println!(
                "{:>6} requests over {} input tokens: {} (other kinds at the prices above)",
                "",
                tier.above_input_tokens,
                tier_prices.join(", ")
            );
        }
        for (tier, price) in &e.service_tiers {
            let prices: Vec<String> =
                price.named().map(|(k, n)| format!("{} {}", k.name(), money::format_nanos(n))).collect();
            println!("{:>6} {} tier: {} (other kinds at the prices above)", "", tier.name(), prices.join(", "));
        }
        if let Some(n) = e.web_search {
            println!("{:>6} web search: {} per request", "", money::format_nanos(n));
        }
    }
}

pub async fn run(cmd: PricesCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        PricesCmd::List { model, at, db } => {
            let pool = super::database(&db, true).await?;
            let (currency, _) = store::state(&pool).await?;
            if let (Some(m), Some(at)) = (&model, at) {
                let book = store::load(&pool).await?;
                match book.lookup(m, at) {
                    Some(e) => {
                        println!("{m} at {at} is priced by entry {} ({}):", e.id.unwrap_or_default(), e.model);
                        print_entries(&currency, std::slice::from_ref(e));
                    }
                    None => println!("{m} has no price at {at}: its tokens are counted as unpriced"),
                }
                return Ok(ExitCode::SUCCESS);
            }
            let entries = store::entries(&pool, model.as_deref()).await?;
            print_entries(&currency, &entries);
        }
        PricesCmd::Set(a) => {
            let SetArgs {
                model,
                from,
                to,
                input,
                output,
                cache_read,
                cache_write,
                cache_write_1h,
                reasoning,
                audio_input,
                audio_output,
                image_input,
                image_output,
                long_context_above,
                long_context,
                service_tiers,
                web_search,
                source,
                reprice,
                db,
            } = *a;
            let mut tiers = std::collections::BTreeMap::new();
            for spec in &service_tiers {
                let (name, list) = spec
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--service-tier {spec:?}: not TIER:KIND=PRICE,..."))?;
                let tier = tokenusage_contract::ServiceTier::parse(name.trim())
                    .filter(|t| tokenusage_contract::ServiceTier::PRICED_APART.contains(t))
                    .ok_or_else(|| anyhow::anyhow!("--service-tier {spec:?}: the tier is batch, flex or priority"))?;
                let price =
                    parse_tier_prices(list).map_err(|why| anyhow::anyhow!("--service-tier {}: {why}", tier.name()))?;
                anyhow::ensure!(tiers.insert(tier, price).is_none(), "--service-tier {} is given twice", tier.name());
            }
            let web_search = web_search
                .map(|t| {
                    money::parse_decimal(&t)
                        .and_then(|d| money::to_scaled(d, 9, tokenusage_pricing::book::MAX_PRICE_NANOS_PER_REQUEST))
                        .map_err(|why| anyhow::anyhow!("--web-search {t:?}: {why} (at most 9 decimal places)"))
                })
                .transpose()?;
            let long_context = match (long_context_above, long_context) {
                (Some(above_input_tokens), Some(list)) => Some(tokenusage_pricing::Tier {
                    above_input_tokens,
                    price: parse_tier_prices(&list).map_err(|why| anyhow::anyhow!("--long-context: {why}"))?,
                }),
                _ => None,
            };
            import::check_model(&model).map_err(|why| anyhow::anyhow!("model {model:?}: {why}"))?;
            anyhow::ensure!(to.is_none_or(|to| to > from), "--to must be after --from");
            let mut price = Price::default();
            for (kind, text) in [
                (Kind::Input, input),
                (Kind::Output, output),
                (Kind::CacheRead, cache_read),
                (Kind::CacheWrite, cache_write),
                (Kind::CacheWrite1h, cache_write_1h),
                (Kind::Reasoning, reasoning),
                (Kind::AudioInput, audio_input),
                (Kind::AudioOutput, audio_output),
                (Kind::ImageInput, image_input),
                (Kind::ImageOutput, image_output),
            ] {
                if let Some(t) = text {
                    let n = Price::parse_per_million(&t).map_err(|why| anyhow::anyhow!("--{}: {why}", kind.name()))?;
                    price.set(kind, Some(n));
                }
            }
            anyhow::ensure!(price.named().next().is_some(), "give at least one price (--input, --output, ...)");
            let pool = super::database(&db, true).await?;
            let (currency, _) = store::state(&pool).await?;
            let entry = Entry {
                id: None,
                model: model.clone(),
                currency: currency.clone(),
                effective_from: from,
                effective_to: to,
                price,
                long_context,
                service_tiers: tiers,
                web_search,
                source,
            };
            let mut tx = pool.begin().await?;
            let changed = store::put(&mut tx, std::slice::from_ref(&entry), &operator()).await?;
            tx.commit().await?;
            let params =
                serde_json::json!({ "entries": import::export(&currency, &[entry])["entries"], "changed": changed });
            audit(&pool, "prices.set", "tokenusage prices set", params).await?;
            println!(
                "{} the price of {model} from {from}{}",
                if changed.added > 0 { "added" } else { "replaced" },
                to.map(|t| format!(" to {t}")).unwrap_or_default()
            );
            let until = to.unwrap_or_else(Utc::now).min(Utc::now() + chrono::TimeDelta::hours(1));
            if from < Utc::now() {
                if reprice {
                    return super::reprice::run_range(&pool, from, until, None, false).await;
                }
                println!(
                    "events already counted since {from} keep their old cost until re-priced:\n  tokenusage reprice --from {} --to {}",
                    from.format("%Y-%m-%dT%H:%M:%SZ"),
                    until.format("%Y-%m-%dT%H:%M:%SZ")
                );
            }
        }
        PricesCmd::Remove { id, db } => {
            let pool = super::database(&db, true).await?;
            let mut tx = pool.begin().await?;
            let gone = store::remove(&mut tx, id).await?;
            let Some(gone) = gone else {
                anyhow::bail!("there is no price entry {id} (see `tokenusage prices list`)");
            };
            tx.commit().await?;
            let params = serde_json::json!({ "removed": import::export(&gone.currency, std::slice::from_ref(&gone))["entries"] });
            audit(&pool, "prices.remove", "tokenusage prices remove", params).await?;
            println!("removed entry {id} ({} from {}); re-price its range to apply", gone.model, gone.effective_from);
        }
        PricesCmd::Import { file, effective_from, dry_run, skip_invalid, db } => {
            let mut text = String::new();
            if file == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&file).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
            }
            let pool = super::database(&db, true).await?;
            let (currency, _) = store::state(&pool).await?;
            let opts = ImportOptions {
                currency: currency.clone(),
                effective_from: effective_from.unwrap_or(DateTime::UNIX_EPOCH),
                source: format!(
                    "import of {}",
                    std::path::Path::new(&file).file_name().map_or(file.clone(), |f| f.to_string_lossy().into_owned())
                ),
            };
            let got = import::read(&text, &opts)?;
            anyhow::ensure!(
                got.format == import::FORMAT || effective_from.is_some(),
                "a {} catalogue carries no dates: give --effective-from (the date its prices apply from)",
                got.format
            );
            eprintln!(
                "read {} entries from a {} catalogue; {} invalid, {} without a per-token price (not imported)",
                got.entries.len(),
                got.format,
                got.skipped.len(),
                got.not_priced.len()
            );
            for (model, why) in got.skipped.iter().take(20) {
                eprintln!("  invalid {model}: {why}");
            }
            if got.skipped.len() > 20 {
                eprintln!("  ... and {} more invalid", got.skipped.len() - 20);
            }
            if !got.skipped.is_empty() && !skip_invalid {
                eprintln!(
                    "nothing imported: {} entries are invalid (fix them, or import the rest with --skip-invalid)",
                    got.skipped.len()
                );
                return Ok(ExitCode::from(1));
            }
            if dry_run {
                println!("dry run: {} entries would be added or replaced", got.entries.len());
                return Ok(ExitCode::SUCCESS);
            }
            let mut tx = pool.begin().await?;
            let changed = store::put(&mut tx, &got.entries, &operator()).await?;
            tx.commit().await?;
            let params = serde_json::json!({
                "file": opts.source, "format": got.format, "effective_from": effective_from,
                "changed": changed, "skipped_invalid": got.skipped.len(), "not_priced": got.not_priced.len(),
            });
            audit(&pool, "prices.import", "tokenusage prices import", params).await?;
            println!("imported: {} added, {} replaced", changed.added, changed.replaced);
        }
        PricesCmd::Export { db } => {
            let pool = super::database(&db, true).await?;
            let (currency, _) = store::state(&pool).await?;
            let entries = store::entries(&pool, None).await?;
            println!("{}", serde_json::to_string_pretty(&import::export(&currency, &entries))?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn operator() -> String {
    format!("cli:{}", std::env::var("USER").unwrap_or_else(|_| "unknown".into()))
}
