//! The container files name only what the job has: every binary, flag and `D2D_*` variable in
//! `Dockerfile` and `compose.yaml` exists in the example binaries' `--help` (no container
//! engine runs where the tests run, so this is what keeps those files from rotting).

// Tests fail loudly on purpose: an unwrap here is an assertion.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use d2d_testkit::example;

/// The example binaries with a command line, by the names of `examples/*.rs`. (The Lambda
/// entry point is the `d2d-lambda` binary, not an example: it has no flags and serves the
/// Lambda runtime API; `tests/lambda_runtime.rs` runs it.)
fn binaries() -> BTreeSet<String> {
    std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// What one binary accepts, read from its own `--help`.
#[derive(Debug, Default)]
struct Interface {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter(|w| !w.is_empty())
}

fn interface(help: &str) -> Interface {
    let mut i = Interface::default();
    for w in words(help) {
        if let Some(flag) = w.strip_prefix("--") {
            if !flag.is_empty() {
                i.flags.insert(flag.to_string());
            }
        } else if w.starts_with("D2D_") || w == "DATABASE_URL" {
            i.env.insert(w.to_string());
        }
    }
    i
}

fn interfaces(names: &BTreeSet<String>) -> BTreeMap<String, Interface> {
    names
        .iter()
        .map(|name| {
            let out = Command::new(example(name)).arg("--help").output().unwrap();
            assert!(out.status.success(), "{name} --help failed");
            (
                name.clone(),
                interface(&String::from_utf8(out.stdout).unwrap()),
            )
        })
        .collect()
}

/// Everything `text` names that the binaries do not have. A flag belongs to the binary named
/// last before it on the same line; `image` (the image's name, e.g. in `docker run … d2d
/// --date`) stands for the image's entrypoint; after cargo's `--example` comes a binary's name.
fn unknown_names(
    text: &str,
    known: &BTreeMap<String, Interface>,
    image: Option<(&str, &str)>,
) -> Vec<String> {
    let all_env: BTreeSet<&String> = known.values().flat_map(|i| &i.env).collect();
    let mut problems = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let mut current: Option<&str> = None;
        let mut tokens = words(line).peekable();
        while let Some(w) = tokens.next() {
            if w == "--example" {
                match tokens.next() {
                    Some(bin) if known.contains_key(bin) => {}
                    other => problems.push(format!("line {}: no example {other:?}", n + 1)),
                }
                current = None;
            } else if known.contains_key(w) {
                current = Some(w);
            } else if image.is_some_and(|(name, _)| name == w) {
                current = image.map(|(_, entry)| entry);
            } else if let Some(flag) = w.strip_prefix("--") {
                if let Some(bin) = current {
                    if !known[bin].flags.contains(flag) {
                        problems.push(format!("line {}: {bin} has no --{flag}", n + 1));
                    }
                }
            } else if (w.starts_with("D2D_") || w == "DATABASE_URL")
                && !all_env.contains(&w.to_string())
            {
                problems.push(format!("line {}: no binary reads {w}", n + 1));
            }
        }
    }
    problems
}

fn read(name: &str) -> String {
    std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The binaries the image ships: copied out of the build stage's `examples/`.
fn image_binaries(dockerfile: &str) -> BTreeSet<String> {
    words(dockerfile)
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "examples")
        .map(|w| w[1].to_string())
        .collect()
}

#[test]
fn dockerfile_and_compose_name_only_what_the_job_has() {
    let names = binaries();
    let known = interfaces(&names);
    let dockerfile = read("Dockerfile");
    let compose = read("compose.yaml");
    let shipped = image_binaries(&dockerfile);
    assert!(shipped.contains("daily_load"), "{shipped:?}");
    for bin in &shipped {
        assert!(
            names.contains(bin),
            "the image ships {bin}, which is no example"
        );
    }
    let image = Some(("d2d", "daily_load"));
    let mut problems = unknown_names(&dockerfile, &known, image);
    problems.extend(unknown_names(&compose, &known, image));
    assert!(problems.is_empty(), "{problems:#?}");

    // compose runs only binaries that the image has.
    for w in words(&compose) {
        if names.contains(w) {
            assert!(
                shipped.contains(w),
                "compose.yaml runs {w}, not in the image"
            );
        }
    }
}

#[test]
fn the_check_catches_a_wrong_flag_a_wrong_variable_and_a_missing_binary() {
    let known = interfaces(&binaries());
    let image = Some(("d2d", "daily_load"));
    let bad = "entrypoint: [\"daily_load\", \"--dat\", \"2019-06-01\"]\n\
               D2D_LANDNG: s3://landing\n\
               RUN cargo build --example daily_loader\n\
               docker run d2d --lake-url x\n";
    let problems = unknown_names(bad, &known, image);
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(problems[0].contains("--dat"), "{problems:#?}");
    assert!(problems[1].contains("D2D_LANDNG"), "{problems:#?}");
    assert!(problems[2].contains("daily_loader"), "{problems:#?}");
    assert!(problems[3].contains("--lake-url"), "{problems:#?}");
    let good = "entrypoint: [\"populate_landing\", \"--from\", \"/sample\", \"--create-bucket\"]\n\
                docker run -e D2D_LAKE=/lake d2d --date 2019-06-01 --max-speed-mps 30\n";
    assert_eq!(unknown_names(good, &known, image), Vec::<String>::new());
}
