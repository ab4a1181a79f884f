//! # d2d-model
//!
//! The pure core of d2d: door2door fleet events as typed, validated Rust values, and the
//! transforms BI needs from them. No IO, no async, no network: bytes in, values out.
//!
//! - [`event`]: the event types (vehicle register/update/deregister, operating period
//!   create/delete), valid by construction, serialisable to the feed's JSON.
//! - [`parse`]: NDJSON to events; every bad line becomes a [`reject::Reject`] naming source,
//!   line and field. Sequential and rayon-parallel (feature `parallel`) paths give identical
//!   results.
//! - [`period`], [`track`], [`distance`]: resolved operating periods, per-vehicle tracks, and
//!   the distance each vehicle travelled during each period (haversine, R = 6,371,008.8 m).
//! - [`check`]: the data-check profile of a batch.
//! - `columnar` (feature `arrow`): the tables of the lake and of the Python bindings as Arrow
//!   schemas and `RecordBatch`es, each column declared once.
//! - [`landing`]: which landing day a file belongs to, from its name, and the decoding of
//!   compressed (gzip) landing files.
//!
//! ```
//! use d2d_model::{distance, parse, period, track};
//!
//! let day = br#"{"event":"create","on":"operating_period","at":"2019-06-01T18:00:00Z","data":{"id":"op_1","start":"2019-06-01T18:00:00Z","finish":"2019-06-01T19:00:00Z"},"organization_id":"o"}
//! {"event":"update","on":"vehicle","at":"2019-06-01T18:10:00Z","data":{"id":"v1","location":{"lat":0.0,"lng":0.0,"at":"2019-06-01T18:10:00Z"}},"organization_id":"o"}
//! {"event":"update","on":"vehicle","at":"2019-06-01T18:20:00Z","data":{"id":"v1","location":{"lat":0.01,"lng":0.0,"at":"2019-06-01T18:20:00Z"}},"organization_id":"o"}
//! "#;
//! let parsed = parse::parse_bytes("day.ndjson", day);
//! assert!(parsed.rejects.is_empty());
//! let events = || parsed.events.iter().map(|r| &r.event);
//! let periods = period::resolve_periods(events());
//! let rows = distance::period_distances(&periods, &track::tracks(events()), &Default::default());
//! assert_eq!(rows[0].fixes, 2);
//! assert!((rows[0].metres - 1_111.95).abs() < 0.01);
//! ```
//!
//! ## Cargo features
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `parallel` | on | [`parse_bytes_par`] and [`parse::parse_sources`] on rayon's threads; without it they run on the calling thread, with the same results, and rayon is not a dependency |
//! | `arrow` | off | `columnar`: every table's Arrow schema (the lake's and Python's), declared once, and `RecordBatch` builders of events, rejects and distances; adds arrow-array and arrow-schema, no IO |

pub mod check;
#[cfg(feature = "arrow")]
pub mod columnar;
pub mod distance;
pub mod event;
pub mod landing;
pub mod parse;
pub mod period;
pub mod reject;
pub mod time;
pub mod track;

pub use event::{Event, EventKind};
pub use parse::{parse_bytes, parse_bytes_par, parse_line, Parsed, Record};
pub use reject::{Reject, RejectReason};
