//! placeholder: filled in by the app work.
