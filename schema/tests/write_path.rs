//! docs/WRITE-PATH.md shows the write path's SQL whole: the latest
//! definition of each function the counting transaction calls, as the
//! migrations leave it. A migration that redefines one of them without
//! the page following fails here; `UPDATE_SNAPSHOTS=1` rewrites the page's
//! generated part (review the diff).

use std::path::{Path, PathBuf};

/// The functions the counting transaction calls, in the order it calls
/// them.
const FUNCTIONS: [&str; 3] = ["tokenusage_count_events_v4", "tokenusage_lower_day_seals", "tokenusage_notify_rollups"];

const BEGIN: &str = "<!-- generated from migrations/ by schema/tests/write_path.rs: do not edit by hand -->";
const END: &str = "<!-- end of generated part -->";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The last `create or replace function NAME(` statement of the
/// migrations, through its closing `$$;`, with its file's name.
fn latest_definition(name: &str) -> (String, String) {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("migrations"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    let opening = format!("create or replace function {name}(");
    let mut found = None;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.starts_with(&opening) {
                let end = lines[i..].iter().position(|l| l.trim_end() == "$$;").expect("a function body ends with $$;");
                let body = lines[i..=i + end].join("\n");
                found = Some((file.file_name().unwrap().to_string_lossy().into_owned(), body));
            }
        }
    }
    found.unwrap_or_else(|| panic!("no migration defines {name}"))
}

fn generated() -> String {
    let mut out = format!("{BEGIN}\n");
    for name in FUNCTIONS {
        let (file, body) = latest_definition(name);
        out.push_str(&format!("\n### `{name}` (migrations/{file})\n\n```sql\n{body}\n```\n"));
    }
    out.push_str(&format!("\n{END}"));
    out
}

#[test]
fn the_write_path_page_shows_the_latest_definition_of_each_function() {
    let path = root().join("docs/WRITE-PATH.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let (a, b) = (page.find(BEGIN).expect("the page has its generated part"), page.find(END).unwrap() + END.len());
    let want = generated();
    if page[a..b] == want {
        return;
    }
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, format!("{}{want}{}", &page[..a], &page[b..])).unwrap();
        return;
    }
    panic!(
        "docs/WRITE-PATH.md does not show the migrations' latest definitions: \
         run `UPDATE_SNAPSHOTS=1 cargo test -p tokenusage-schema --test write_path` and review the diff"
    );
}

#[test]
fn every_function_named_is_the_one_the_projector_calls() {
    // The page would be true and useless if it showed a function nobody
    // calls any more: the projector names the first one, and it names
    // the others.
    let store = std::fs::read_to_string(root().join("projector/src/store.rs")).unwrap();
    assert!(store.contains(&format!("select {}(", FUNCTIONS[0])), "projector/src/store.rs calls {}", FUNCTIONS[0]);
    let (_, counting) = latest_definition(FUNCTIONS[0]);
    for f in &FUNCTIONS[1..] {
        assert!(counting.contains(&format!("{f}(")), "{} calls {f}", FUNCTIONS[0]);
    }
}
