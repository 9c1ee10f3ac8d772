//! The one watch → cache → reconcile machinery shared by the scheduler, agent, proxy
//! and controllers: a watcher that resumes from a resource version and re-lists on
//! `OUT_OF_RANGE`, a reflector cache, a work queue with back-off, and leader election.
//!
//! Empty until the first consumer (the scheduler, issue 4) lands: nothing here
//! pretends to work before then.
