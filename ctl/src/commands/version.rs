use serde::Serialize;

use crate::cli::{Format, FormatArgs};
use crate::client::{Clients, status_error};

#[derive(Serialize)]
struct Version {
    client_version: &'static str,
    version: String,
    runtime_name: String,
    runtime_version: String,
    runtime_api_version: String,
}

pub async fn run(clients: &Clients, args: &FormatArgs) -> anyhow::Result<()> {
    let v = clients
        .runtime()
        .version(k8s_cri::v1::VersionRequest { version: String::new() })
        .await
        .map_err(|s| status_error("version", s))?
        .into_inner();
    let out = Version {
        client_version: env!("CARGO_PKG_VERSION"),
        version: v.version,
        runtime_name: v.runtime_name,
        runtime_version: v.runtime_version,
        runtime_api_version: v.runtime_api_version,
    };
    match args.output {
        Format::Table => {
            println!("Client Version:     {}", out.client_version);
            println!("Version:            {}", out.version);
            println!("RuntimeName:        {}", out.runtime_name);
            println!("RuntimeVersion:     {}", out.runtime_version);
            println!("RuntimeApiVersion:  {}", out.runtime_api_version);
            Ok(())
        }
        f => crate::output::print_structured(&out, f),
    }
}
