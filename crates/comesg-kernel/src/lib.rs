//! The comesg microkernel.
//!
//! It owns the namespace tree and every port, checks every request against
//! the caller's `SO_PEERCRED` credentials, and cleans up after every client
//! however it exits. Run it as its own process (`comesg kernel`) or embedded
//! on a thread ([`Kernel::spawn`]), each on its own socket path.
//!
//! ```no_run
//! use comesg_kernel::{Kernel, KernelConfig};
//! let kernel = Kernel::spawn(KernelConfig::new("/tmp/my-test/kernel.sock")).unwrap();
//! // ... clients connect to kernel.socket() ...
//! drop(kernel); // stops it
//! ```
#![deny(missing_docs)]

pub mod compartments;
pub mod paths;
mod server;
pub mod state;

pub use compartments::quota::UserLimits;
pub use paths::default_socket_path;
pub use server::{Kernel, KernelConfig, KernelHandle, StartError};
pub use state::{Limits, State};
