//! The scheduler: watches unbound Instances and binds each to the best node that fits.
//!
//! Empty until issue 4.
