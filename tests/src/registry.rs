//! Debian's docker-registry on 127.0.0.1 with its own storage, optionally behind htpasswd basic auth.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub struct Registry {
    child: Option<Child>,
    port: u16,
    _dir: TempDir,
    pub credentials: Option<(String, String)>,
}

impl Registry {
    pub fn start() -> Registry {
        Self::spawn(None)
    }

    pub fn start_with_htpasswd(user: &str, password: &str) -> Registry {
        Self::spawn(Some((user.to_string(), password.to_string())))
    }

    fn spawn(credentials: Option<(String, String)>) -> Registry {
        let dir = tempfile::tempdir().expect("registry dir");
        let port = crate::free_port();
        let mut config = format!(
            "version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\nlog:\n  level: error\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &credentials {
            let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("run htpasswd");
            assert!(out.status.success(), "htpasswd failed");
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, out.stdout).expect("write htpasswd");
            config.push_str(&format!("auth:\n  htpasswd:\n    realm: reef-test\n    path: {}\n", file.display()));
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start /usr/bin/docker-registry (apt install docker-registry)");
        let registry = Registry { child: Some(child), port, _dir: dir, credentials };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match ureq::get(&format!("http://{}/v2/", self.addr())).config().http_status_as_error(false).build().call()
            {
                Ok(_) => return,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        panic!("docker-registry did not come up on {}", self.addr());
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL, as a registry dying under a pull.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn auth(&self) -> Option<(&str, &str)> {
        self.credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.kill();
    }
}
