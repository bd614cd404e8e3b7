use super::*;

fn m(s: Option<&str>, p: Option<&str>) -> Mapping {
    Mapping {
        connection: "c".into(),
        kind: "scope".into(),
        external_id: "x".into(),
        target_source: s.map(Into::into),
        target_project: p.map(Into::into),
    }
}

#[test]
fn targets_overlap_when_one_event_could_fall_in_both() {
    assert!(m(Some("a"), None).overlaps(&m(None, Some("p"))));
    assert!(m(Some("a"), Some("p")).overlaps(&m(Some("a"), None)));
    assert!(!m(Some("a"), None).overlaps(&m(Some("b"), None)));
    assert!(!m(None, Some("p")).overlaps(&m(None, Some("q"))));
    assert!(!m(None, Some("p")).overlaps(&m(None, Some("p"))), "the same target twice is one target");
}

#[test]
fn names_and_base_urls_are_checked() {
    assert!(check_name("openai-prod").is_ok());
    assert!(check_name("OpenAI").is_err());
    assert!(check_base_url("https://api.openai.com").is_ok());
    assert!(check_base_url("https://u:p@api.openai.com").is_err());
    assert!(check_base_url("https://api.openai.com/?key=1").is_err());
    assert!(check_base_url("ftp://x").is_err());
}
