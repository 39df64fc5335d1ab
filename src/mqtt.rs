//! placeholder: filled in by the mqtt work.
