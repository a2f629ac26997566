use super::*;

#[test]
fn splits_documents_with_their_first_lines() {
    let src =
        "# header comment\n---\na: 1\n---\n# only a comment\n---\nb: 2\nc: 3\n...\n--- {d: 4}\n";
    let docs = split_documents(src);
    let got: Vec<_> = docs.iter().map(|d| (d.first_line, d.text)).collect();
    assert_eq!(
        got,
        [
            (2, "---\na: 1\n"),
            (6, "---\nb: 2\nc: 3\n"),
            (10, "--- {d: 4}\n")
        ]
    );
}

#[test]
fn a_file_without_markers_is_one_document() {
    let docs = split_documents("a: 1\nb: 2");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].first_line, 1);
    assert!(split_documents("").is_empty());
    assert!(split_documents("# nothing\n\n").is_empty());
}

#[test]
fn locates_values_after_their_key() {
    let doc = Document {
        text: "---\nmetadata:\n  name: orders\nspec:\n  identity: orders\n  endpoints: [\"a:1\", 'b']\n",
        first_line: 10,
    };
    // (key, value, expected (line, col))
    let cases: &[(&str, Option<&str>, (usize, usize))] = &[
        ("identity", Some("orders"), (14, 13)),
        ("name", Some("orders"), (12, 9)),
        ("endpoints", Some("a:1"), (15, 15)),
        ("endpoints", Some("b"), (15, 22)),
        ("endpoints", Some("missing"), (15, 3)),
        ("nokey", None, (10, 1)),
        ("spec", None, (13, 1)),
    ];
    for (key, value, want) in cases {
        assert_eq!(doc.locate(key, *value), *want, "{key} {value:?}");
    }
}

#[test]
fn finds_whole_tokens_only() {
    assert_eq!(find_token("principals: [a/b, a/bc]", "a/bc"), Some(19));
    assert_eq!(find_token("x: ab", "b"), None);
    assert_eq!(find_key("  notPrincipals: [x]", "principals"), None);
    assert_eq!(find_key("  principals: [x]", "principals"), Some(3));
    assert_eq!(find_key("{\"principals\": [x]}", "principals"), Some(2));
}
