//! The report folder never costs a user a file (issue 11 item 1): an existing folder is replaced
//! only when it is exactly an earlier report (its manifest lists every entry); overwrite mode
//! writes beside other files and never deletes or replaces one that no report wrote; no temp
//! folder is left behind.

use expgraph_report::{Attachment, Figure, Link, LinkList, Report, RgbImage, Section};
use std::path::Path;

/// A small report with `figures` figures whose title is `title`.
fn report(title: &str, figures: usize) -> Report {
    let mut r = Report::new(title);
    r.sections.push(Section {
        title: "figures".into(),
        text: None,
        figures: (0..figures)
            .map(|i| Figure {
                caption: format!("figure {i}"),
                image: RgbImage::from_pixel(8, 8, image::Rgb([i as u8, 0, 0])),
            })
            .collect(),
    });
    r
}

/// Sorted entry names of `dir`.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

/// Entries of `dir` that a report write left behind (its staging and old-report folders).
fn temp_folders(dir: &Path) -> Vec<String> {
    names(dir).into_iter().filter(|n| n.starts_with(".expgraph-report-")).collect()
}

fn index(out: &Path) -> String {
    std::fs::read_to_string(out.join("index.html")).unwrap()
}

/// The reproduce case of the issue: `report -o d` over d/{index.html, notes.txt, sub/} deleted
/// all of it. Now it is refused (with and without overwrite) and everything stays.
#[test]
fn a_folder_with_user_files_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("index.html"), "x").unwrap();
    std::fs::write(d.join("notes.txt"), "keep").unwrap();
    std::fs::write(d.join("sub/deep.txt"), "deep").unwrap();

    let err = report("new", 2).write(&d).unwrap_err().to_string();
    assert!(err.contains(&d.display().to_string()), "names the folder: {err}");
    assert!(err.contains("`index.html`"), "names the first foreign entry: {err}");
    assert!(err.contains("no .expgraph-report.json manifest"), "{err}");

    // overwrite mode would have to replace the user's index.html: refused as well
    let err = report("new", 2).write_with(&d, true).unwrap_err().to_string();
    assert!(err.contains("`index.html`") && err.contains("never replaced or deleted"), "{err}");
    assert!(Report::check_output(&d, false).is_err() && Report::check_output(&d, true).is_err());

    assert_eq!(names(&d), ["index.html", "notes.txt", "sub"]);
    assert_eq!(index(&d), "x");
    assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "keep");
    assert_eq!(std::fs::read_to_string(d.join("sub/deep.txt")).unwrap(), "deep");
    assert_eq!(names(dir.path()), ["d"], "no temp folder left");
}

/// Without a colliding name, overwrite mode writes the report beside the user's files.
#[test]
fn overwrite_writes_beside_user_files_and_never_deletes_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("notes.txt"), "keep").unwrap();
    let err = report("first", 1).write(&d).unwrap_err().to_string();
    assert!(err.contains("`notes.txt`"), "{err}");
    Report::check_output(&d, true).unwrap();

    report("first", 3).write_with(&d, true).unwrap();
    assert_eq!(
        names(&d),
        [".expgraph-report.json", "index.html", "notes.txt", "s00-f000.png", "s00-f001.png", "s00-f002.png", "sub"]
    );
    // again, with fewer figures: the stale ones (listed in the manifest) go, the user's stay
    report("second", 1).write_with(&d, true).unwrap();
    assert_eq!(names(&d), [".expgraph-report.json", "index.html", "notes.txt", "s00-f000.png", "sub"]);
    assert!(index(&d).contains("second"));
    assert_eq!(std::fs::read_to_string(d.join("notes.txt")).unwrap(), "keep");
    let manifest = std::fs::read_to_string(d.join(Report::MANIFEST)).unwrap();
    assert!(!manifest.contains("notes.txt") && manifest.contains("s00-f000.png"), "{manifest}");
    // a plain write still refuses: the folder is not only a report
    assert!(report("third", 1).write(&d).is_err());
    assert_eq!(names(dir.path()), ["d"]);
}

#[test]
fn an_earlier_report_is_replaced_in_one_step() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let first = report("first report", 3).write(&out).unwrap();
    assert_eq!(first.images.len(), 3);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(Report::MANIFEST)).unwrap()).unwrap();
    assert_eq!(manifest["format"], Report::MANIFEST_FORMAT);
    assert_eq!(manifest["format_version"], Report::MANIFEST_VERSION);
    let listed: Vec<&str> = manifest["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(listed, ["index.html", "s00-f000.png", "s00-f001.png", "s00-f002.png"]);

    report("second report", 1).write(&out).unwrap();
    assert!(index(&out).contains("second report") && !index(&out).contains("first report"));
    assert_eq!(names(&out), [".expgraph-report.json", "index.html", "s00-f000.png"]);
    assert_eq!(names(dir.path()), ["report"], "no temp folder left");
}

#[test]
fn a_foreign_file_in_an_earlier_report_blocks_the_replacement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    report("first", 2).write(&out).unwrap();
    std::fs::write(out.join("my-notes.txt"), "mine").unwrap();
    let err = report("second", 2).write(&out).unwrap_err().to_string();
    assert!(err.contains("`my-notes.txt`") && err.contains("not listed"), "{err}");
    assert!(index(&out).contains("first"), "the earlier report is untouched");
    assert_eq!(std::fs::read_to_string(out.join("my-notes.txt")).unwrap(), "mine");

    // a foreign folder blocks too, named as the folder
    std::fs::remove_file(out.join("my-notes.txt")).unwrap();
    std::fs::create_dir(out.join("extra")).unwrap();
    let err = report("second", 2).write(&out).unwrap_err().to_string();
    assert!(err.contains("`extra`"), "{err}");
    std::fs::remove_dir(out.join("extra")).unwrap();

    // so does a changed report file; overwrite mode replaces it
    std::fs::write(out.join("index.html"), "edited").unwrap();
    let err = report("second", 2).write(&out).unwrap_err().to_string();
    assert!(err.contains("`index.html` changed"), "{err}");
    assert_eq!(index(&out), "edited");
    report("second", 2).write_with(&out, true).unwrap();
    assert!(index(&out).contains("second"));
    assert_eq!(names(dir.path()), ["report"]);
}

#[test]
fn no_temp_folder_is_left_and_the_current_folder_is_handled() {
    // `cwd` stands for the current folder; `-o .` is `cwd/.` (the process cwd is not changed)
    let parent = tempfile::tempdir().unwrap();
    let cwd = parent.path().join("project");
    std::fs::create_dir(&cwd).unwrap();
    std::fs::write(cwd.join("Cargo.toml"), "[package]").unwrap();
    for out in [cwd.join("."), cwd.clone()] {
        for overwrite in [false, true] {
            let result = report("here", 1).write_with(&out, overwrite);
            if overwrite {
                result.unwrap(); // beside Cargo.toml
                for n in names(&cwd) {
                    if n != "Cargo.toml" {
                        std::fs::remove_file(cwd.join(n)).unwrap();
                    }
                }
            } else {
                let err = result.unwrap_err().to_string();
                assert!(err.contains("`Cargo.toml`"), "{err}");
            }
            assert_eq!(names(&cwd), ["Cargo.toml"]);
            assert!(temp_folders(parent.path()).is_empty() && temp_folders(&cwd).is_empty());
        }
    }
    // the current folder that is an earlier report is replaced (through its parent)
    let here = parent.path().join("here");
    report("first", 1).write(&here).unwrap();
    report("second", 2).write(&here.join(".")).unwrap();
    assert!(index(&here).contains("second"));
    assert_eq!(names(parent.path()), ["here", "project"]);
    // a missing parent is created; a refused write there leaves nothing either
    let nested = parent.path().join("a/b/report");
    report("x", 1).write(&nested).unwrap();
    std::fs::write(nested.join("user.txt"), "u").unwrap();
    assert!(report("y", 1).write(&nested).is_err());
    assert!(temp_folders(&parent.path().join("a/b")).is_empty());
}

#[test]
fn a_report_of_an_older_version_is_replaced_only_in_overwrite_mode() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    report("old", 3).write(&out).unwrap();
    std::fs::remove_file(out.join(Report::MANIFEST)).unwrap(); // as written before manifests
    let err = report("new", 1).write(&out).unwrap_err().to_string();
    assert!(err.contains("older expgraph"), "{err}");
    report("new", 1).write_with(&out, true).unwrap();
    assert!(index(&out).contains("new"));
    assert_eq!(names(&out), [".expgraph-report.json", "index.html", "s00-f000.png"]);

    // with a user file beside it: the old page and its figures go, the user file stays
    report("old", 3).write(&out).unwrap();
    std::fs::remove_file(out.join(Report::MANIFEST)).unwrap();
    std::fs::write(out.join("s00-f009.png"), "not linked by the page").unwrap();
    std::fs::write(out.join("notes.txt"), "n").unwrap();
    report("new", 1).write_with(&out, true).unwrap();
    assert_eq!(names(&out), [".expgraph-report.json", "index.html", "notes.txt", "s00-f000.png", "s00-f009.png"]);
    assert_eq!(names(dir.path()), ["report"]);
}

#[cfg(unix)]
#[test]
fn a_link_to_an_earlier_report_stays_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let real = dir.path().join("real");
    report("first", 1).write(&real).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    report("second", 1).write(&link).unwrap();
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert!(index(&real).contains("second"));
    assert_eq!(names(dir.path()), ["link", "real"]);
}

/// A report with two attached pages in `pages/` (`which` in their text) linked from a list.
fn with_pages(which: &str) -> Report {
    let mut r = report("pages", 1);
    for name in ["a", "b"] {
        r.attachments.push(Attachment { path: format!("pages/{name}.html"), bytes: format!("{which} {name}").into() });
    }
    r.links.push(LinkList {
        title: "Attached pages".into(),
        text: None,
        rows: vec![("row".into(), vec![Link { text: "page a".into(), href: "pages/a.html".into(), thumbnail: None }])],
    });
    r
}

#[test]
fn attachments_are_written_listed_and_replaced_with_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    with_pages("first").write(&out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("pages/b.html")).unwrap(), "first b");
    let html = index(&out);
    assert!(html.contains("Attached pages") && html.contains("page a"), "{html}");
    assert!(html.contains("pages&#x2f;a.html") || html.contains("pages/a.html"), "{html}");
    let manifest = std::fs::read_to_string(out.join(Report::MANIFEST)).unwrap();
    assert!(manifest.contains("pages/a.html") && manifest.contains("pages/b.html"), "{manifest}");
    // the same folder takes the next report: attachments replaced, and gone with a report without them
    with_pages("second").write(&out).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("pages/a.html")).unwrap(), "second a");
    report("plain", 1).write(&out).unwrap();
    assert_eq!(names(&out), [".expgraph-report.json", "index.html", "s00-f000.png"]);
    // in overwrite mode beside a user's file in the sub-folder, which stays
    with_pages("third").write(&out).unwrap();
    std::fs::write(out.join("pages/mine.txt"), "keep").unwrap();
    assert!(with_pages("fourth").write(&out).is_err());
    with_pages("fourth").write_with(&out, true).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("pages/a.html")).unwrap(), "fourth a");
    report("plain", 1).write_with(&out, true).unwrap();
    assert_eq!(names(&out.join("pages")), ["mine.txt"]);
    assert!(temp_folders(dir.path()).is_empty());
}

#[test]
fn an_attachment_outside_a_sub_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    for bad in [
        "index.html",
        "s00-f000.png",
        "../x/y.html",
        "p/../../y",
        "/abs/x",
        "p//x",
        ".hidden/x",
        "p/.expgraph-report.json",
    ] {
        let mut r = report("bad", 1);
        r.attachments.push(Attachment { path: bad.into(), bytes: vec![] });
        let err = r.write(&out).unwrap_err().to_string();
        assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        assert!(!out.exists(), "{bad}: something was written");
    }
    let mut r = with_pages("x");
    r.attachments.push(r.attachments[0].clone());
    assert!(r.write(&out).unwrap_err().to_string().contains("twice"));
    assert!(!out.exists());
}
