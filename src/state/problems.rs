//! A list of configuration problems, collected so every one is reported, not just the first.

use std::path::Path;

use crate::config::{Location, Problem};

/// Collects problems so every one is reported, not just the first.
#[derive(Debug, Default)]
pub(super) struct Problems {
    pub(super) list: Vec<Problem>,
}

impl Problems {
    pub(super) fn add(
        &mut self,
        file: &Path,
        field: impl Into<String>,
        message: impl Into<String>,
    ) {
        Problem::push_capped(
            &mut self.list,
            Problem {
                at: Location {
                    file: file.to_path_buf(),
                    line_col: None,
                    field: field.into(),
                },
                message: message.into(),
            },
        );
    }
}
