//! reefd: the Reef node agent. Serves the Kubernetes CRI and Reef's own API on a unix socket.

#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    reef_node_agent::main()
}
