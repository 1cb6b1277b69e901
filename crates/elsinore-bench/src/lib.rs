//! Parts of the load harness (`bench/`): the `bench-backend` binary, a
//! minimal hyper server answering a fixed body, used as the handler behind
//! both nginx and Elsinore so that both proxy the very same thing; and the
//! criterion micro-benchmarks of the request path's hot functions.
//!
//! Nothing here is used by Elsinore itself.
