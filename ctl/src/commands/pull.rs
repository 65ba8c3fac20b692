//! `rctl pull`: Reef's streaming pull. A bar per layer on a terminal, docker-like lines otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use reef_api::v1 as api;
use reef_api::v1::pull_image_progress::Event;

use crate::cli::PullArgs;
use crate::client::{Clients, status_error};
use crate::output::short_id;

pub async fn run(clients: &Clients, args: &PullArgs) -> anyhow::Result<()> {
    let (username, password) = match &args.user {
        Some(u) => match u.split_once(':') {
            Some((user, pass)) => (user.to_string(), pass.to_string()),
            None => anyhow::bail!("--user must be USER:PASSWORD"),
        },
        None => (String::new(), String::new()),
    };
    let request = api::PullImageRequest { image: args.image.clone(), username, password, ..Default::default() };
    let mut stream = clients
        .reef()
        .pull_image(request)
        .await
        .map_err(|s| status_error(&format!("pull {}", args.image), s))?
        .into_inner();
    let mut view: Box<dyn View> = if std::io::stdout().is_terminal() && !args.plain {
        Box::new(Bars::default())
    } else {
        Box::new(Lines::default())
    };
    loop {
        let message = stream.message().await.map_err(|s| status_error(&format!("pull {}", args.image), s))?;
        let Some(event) = message.and_then(|m| m.event) else {
            anyhow::bail!("pull {}: reefd ended the stream without a result", args.image);
        };
        match event {
            Event::Resolved(r) => view.resolved(&r),
            Event::Layer(l) => view.layer(&l),
            Event::Done(d) => {
                view.done();
                println!("Image: {}", d.image_id);
                println!("{}", d.reference);
                return Ok(());
            }
        }
    }
}

trait View {
    fn resolved(&mut self, r: &api::Resolved);
    fn layer(&mut self, l: &api::LayerProgress);
    fn done(&mut self);
}

fn short_digest(d: &str) -> String {
    short_id(d)
}

/// Plain lines, one per state change, for logs and pipes.
#[derive(Default)]
struct Lines {
    last: HashMap<String, i32>,
}

impl View for Lines {
    fn resolved(&mut self, r: &api::Resolved) {
        println!("Digest: {}", r.manifest_digest);
    }

    fn layer(&mut self, l: &api::LayerProgress) {
        if self.last.get(&l.digest) == Some(&l.state) {
            return;
        }
        self.last.insert(l.digest.clone(), l.state);
        let what = match api::LayerState::try_from(l.state).unwrap_or(api::LayerState::Unspecified) {
            api::LayerState::Waiting => "Waiting",
            api::LayerState::Downloading => "Pulling",
            api::LayerState::AlreadyExists => "Already exists",
            api::LayerState::Done => "Pull complete",
            api::LayerState::Unspecified => return,
        };
        println!("{}: {what}", short_digest(&l.digest));
    }

    fn done(&mut self) {}
}

#[derive(Default)]
struct Bars {
    multi: MultiProgress,
    bars: HashMap<String, ProgressBar>,
}

impl View for Bars {
    fn resolved(&mut self, r: &api::Resolved) {
        let style = ProgressStyle::with_template("{prefix} {msg:15} [{bar:30}] {bytes}/{total_bytes}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        for layer in &r.layers {
            let bar = self.multi.add(ProgressBar::new(layer.size.max(0) as u64));
            bar.set_style(style.clone());
            bar.set_prefix(short_digest(&layer.digest));
            bar.set_message("Waiting");
            self.bars.insert(layer.digest.clone(), bar);
        }
    }

    fn layer(&mut self, l: &api::LayerProgress) {
        let Some(bar) = self.bars.get(&l.digest) else { return };
        bar.set_position(l.current.max(0) as u64);
        match api::LayerState::try_from(l.state).unwrap_or(api::LayerState::Unspecified) {
            api::LayerState::Waiting => bar.set_message("Waiting"),
            api::LayerState::Downloading => bar.set_message("Downloading"),
            api::LayerState::AlreadyExists => bar.finish_with_message("Already exists"),
            api::LayerState::Done => bar.finish_with_message("Pull complete"),
            api::LayerState::Unspecified => {}
        }
    }

    fn done(&mut self) {
        for bar in self.bars.values() {
            if !bar.is_finished() {
                bar.finish();
            }
        }
    }
}
