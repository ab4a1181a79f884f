//! Tables cross into Python as Arrow, through the Arrow C stream interface.
//!
//! The tables themselves (names, types, nullability, and the builders) are
//! `d2d_model::columnar`'s, the very schemas the lake's curated zone is written with. Here
//! they are only handed over: [`ArrowTable`] implements the Arrow PyCapsule protocol
//! (`__arrow_c_stream__`), which pyarrow (>= 14) and polars import without copying a buffer.

use arrow_array::ffi_stream::FFI_ArrowArrayStream;
use arrow_array::{RecordBatch, RecordBatchIterator};
use arrow_schema::ArrowError;
use d2d_model::columnar::Batches;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

pub use d2d_model::columnar::{distances, EventBatches, RejectBatches};

/// The capsule name the protocol requires for a stream.
const STREAM: &std::ffi::CStr = c"arrow_array_stream";

/// A table built in Rust, exported to Python as an Arrow C stream of its batches.
#[pyclass(module = "d2d._d2d", name = "ArrowTable", frozen)]
pub struct ArrowTable(Batches);

impl From<Batches> for ArrowTable {
    fn from(batches: Batches) -> Self {
        Self(batches)
    }
}

#[pymethods]
impl ArrowTable {
    /// The table as an ``arrow_array_stream`` PyCapsule (the Arrow PyCapsule protocol).
    ///
    /// ``requested_schema`` is ignored, as the protocol allows: the table has one schema.
    #[pyo3(signature = (requested_schema = None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        // The batches' buffers are reference-counted: the stream shares them, copies nothing.
        let batches: Vec<RecordBatch> = self.0.batches.clone();
        let reader = RecordBatchIterator::new(
            batches.into_iter().map(Ok::<_, ArrowError>),
            self.0.schema.clone(),
        );
        // The capsule owns the stream; pyo3 drops it with the capsule, and dropping an
        // `FFI_ArrowArrayStream` calls its `release` unless the consumer moved it out (which
        // sets `release` to null), as the protocol asks of a capsule's destructor.
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(Box::new(reader)), STREAM)
    }

    /// Rows over all batches.
    #[getter]
    fn num_rows(&self) -> usize {
        self.0.num_rows()
    }

    fn __repr__(&self) -> String {
        let names: Vec<&str> = self
            .0
            .schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        format!(
            "ArrowTable({} rows in {} batches: {})",
            self.0.num_rows(),
            self.0.batches.len(),
            names.join(", ")
        )
    }
}
