//! Property tests of the few-shot annotation reader on mutated inputs (issue 11):
//! `FewShotAnnotations::from_json` on a valid `ANN.json` with values of the wrong type, huge
//! numbers, removed entries, flipped bits and cut text, and on very large inputs.
//!
//! Every parse must end in an error or in annotations that pass their own checks: never a panic,
//! never a hang (each parse runs on its own thread under a time limit), never an allocation
//! sized by a number in the text (a global allocator refuses any single request above
//! [`MAX_ALLOC`]). 64 cases unless `PROPTEST_CASES` is set; fixed seed unless
//! `PROPTEST_RNG_SEED` is set.

use expgraph_localize::FewShotAnnotations;

// The harness (bounded runs, capped allocations, byte mutations, JSON edits): expgraph-testkit.
use expgraph_testkit::*;

#[global_allocator]
static ALLOC: CappedAlloc = CappedAlloc;

// ---- few-shot annotations ----

const ANN: &str = r#"{ "parts": {
    "head": [ { "image_id": "2008_000123_1", "point": { "h": 52.0, "w": 110.5 } },
              { "image_id": "2008_000456_2", "point": { "h": 40.0, "w": 98.0 } },
              { "image_id": "2009_001234_1", "point": { "h": 61.0, "w": 120.0 } } ],
    "tail": [ { "image_id": "2008_000123_1", "point": { "h": 200.0, "w": 12 } } ] } }"#;

/// Parse `text`; a result must satisfy the documented checks.
fn parse(text: String) -> Result<(), TestCaseError> {
    let result = bounded("FewShotAnnotations::from_json", move || FewShotAnnotations::from_json(&text));
    if let Ok(ann) = result {
        prop_assert!(!ann.parts.is_empty());
        for (part, examples) in &ann.parts {
            prop_assert!(!examples.is_empty(), "part {part} without examples");
            for (i, e) in examples.iter().enumerate() {
                prop_assert!(e.point.h.is_finite() && e.point.w.is_finite(), "{part}: {:?}", e.point);
                prop_assert!(examples[..i].iter().all(|o| o.image_id != e.image_id), "{part}: {} twice", e.image_id);
            }
        }
    }
    Ok(())
}

#[test]
fn annotations_json_survives_mutation() {
    check(64, json_edit(), |edit| parse(String::from_utf8_lossy(&edit_json(ANN.as_bytes(), &edit)).into_owned()));
}

/// Hand-written cases: out-of-range numbers, deep nesting, wrong types, huge strings.
#[test]
fn odd_annotation_files() {
    let deep = "[".repeat(1 << 20);
    let deep_obj = r#"{"parts":"#.repeat(1 << 16);
    let long_id =
        format!(r#"{{"parts":{{"head":[{{"image_id":"{}","point":{{"h":1,"w":2}}}}]}}}}"#, "a".repeat(1 << 22));
    for text in [
        r#"{"parts":{"head":[{"image_id":"a","point":{"h":1e400,"w":2}}]}}"#,
        r#"{"parts":{"head":[{"image_id":"a","point":{"h":1e308,"w":-1e308}}]}}"#,
        r#"{"parts":{"head":[{"image_id":"a","point":{"h":18446744073709551616,"w":2}}]}}"#,
        r#"{"parts":{"head":[{"image_id":7,"point":{"h":1,"w":2}}]}}"#,
        r#"{"parts":{"head":[{"image_id":"a","point":[1,2]}]}}"#,
        r#"{"parts":{"head":{"image_id":"a"}}}"#,
        r#"{"parts":[]}"#,
        r#"{"parts":null}"#,
        r#"[]"#,
        "",
        &deep,
        &deep_obj,
        &long_id,
    ] {
        parse(text.to_string()).unwrap_or_else(|e| panic!("{:.80}: {e}", text));
    }
}

/// Regression: the duplicate check compared every example with every earlier one, so one part
/// with 10^5 distinct examples took about 10^10 string comparisons (seconds to minutes: a hang
/// for a file from the internet). It is now a hash-set lookup.
#[test]
fn many_examples_parse_quickly() {
    let n = 200_000;
    let examples: Vec<String> =
        (0..n).map(|i| format!(r#"{{"image_id":"img{i:07}","point":{{"h":1.5,"w":2.5}}}}"#)).collect();
    let text = format!(r#"{{"parts":{{"head":[{}]}}}}"#, examples.join(","));
    let start = std::time::Instant::now();
    let ann = bounded("200000 examples", move || FewShotAnnotations::from_json(&text)).unwrap();
    assert_eq!(ann.parts["head"].len(), n);
    assert!(start.elapsed() < std::time::Duration::from_secs(10), "{:?}", start.elapsed());
    // and the last example repeating the first is still found
    let mut dup: Vec<String> = (0..n).map(|i| format!(r#"{{"image_id":"i{i}","point":{{"h":1,"w":2}}}}"#)).collect();
    dup.push(r#"{"image_id":"i0","point":{"h":3,"w":4}}"#.into());
    let text = format!(r#"{{"parts":{{"head":[{}]}}}}"#, dup.join(","));
    let e = bounded("duplicate at the end", move || FewShotAnnotations::from_json(&text)).unwrap_err().to_string();
    assert!(e.contains("i0") && e.contains("twice"), "{e}");
}
