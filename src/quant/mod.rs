//! Compressed representations of rows for the scan tiers (issue 19): today the int8 rows
//! with certified bounds of [`int8`], which a certified search scans to find the rows
//! that can be in the top-k before it re-scores them exactly.

pub(crate) mod int8;
