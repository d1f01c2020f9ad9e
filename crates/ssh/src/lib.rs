//! Run a bluegreen plan over SSH.
