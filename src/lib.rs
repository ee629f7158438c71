//! veltrix
