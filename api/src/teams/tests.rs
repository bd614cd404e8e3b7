use super::*;

#[test]
fn names_follow_the_activity_rule_and_reach_covers_only_managed_members() {
    assert!(valid_name("platform-2.eu_west"));
    for bad in ["", "Platform", "a b", "x/y", &"a".repeat(65)] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    let reach = Reach {
        manages: [("a".to_owned(), Members::from(vec!["alice".to_owned(), "bob".to_owned()]))].into_iter().collect(),
    };
    assert!(reach.covers("alice") && reach.covers("bob"));
    assert!(!reach.covers("carol") && !reach.covers("ali"));
}
