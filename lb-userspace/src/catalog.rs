//! What the agent programmed, by name: the maps hold ids and addresses, this says which
//! Service, port and frontend group each id is. The agent writes it after every sync
//! (`catalog.json` next to the saved allocations); `lbctl` and the metrics read it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{model::ServiceSummary, services::ServiceProgram};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    pub services: Vec<ServiceSummary>,
    pub programs: Vec<CatalogProgram>,
}

/// One programmed service program and the names behind it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogProgram {
    /// `ns/name:port/TCP/v4/scope`.
    pub key: String,
    pub program: ServiceProgram,
}

impl CatalogProgram {
    fn key_part(&self, i: usize) -> &str {
        self.key.rsplit_once(':').map_or("", |(_, rest)| rest).split('/').nth(i).unwrap_or("")
    }

    /// `ns/name`.
    pub fn service(&self) -> &str {
        self.key.rsplit_once(':').map_or(self.key.as_str(), |(svc, _)| svc)
    }

    pub fn namespace(&self) -> &str {
        self.service().split_once('/').map_or("", |(ns, _)| ns)
    }

    pub fn name(&self) -> &str {
        self.service().split_once('/').map_or(self.service(), |(_, n)| n)
    }

    /// The Service port's name, or its number when unnamed.
    pub fn port(&self) -> &str {
        self.key_part(0)
    }

    pub fn family(&self) -> &str {
        self.key_part(2)
    }

    /// `cluster`, `node` or `lb`.
    pub fn scope(&self) -> &str {
        self.key_part(3)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("catalog {path}: {reason}")]
pub struct CatalogError {
    pub path: PathBuf,
    pub reason: String,
}

impl Catalog {
    /// The catalog that belongs to a state file (`.../allocations.json` → `.../catalog.json`).
    pub fn path_for(state_file: &Path) -> PathBuf {
        state_file.with_file_name("catalog.json")
    }

    pub fn load(path: &Path) -> Result<Self, CatalogError> {
        let err = |reason: String| CatalogError { path: path.to_owned(), reason };
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("{e} (is lb-agent running with this --state-file?)")))?;
        serde_json::from_str(&text).map_err(|e| err(e.to_string()))
    }

    /// Writes atomically (temporary file + rename).
    pub fn save(&self, path: &Path) -> Result<(), CatalogError> {
        let err = |reason: String| CatalogError { path: path.to_owned(), reason };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(self).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, text).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, path).map_err(|e| err(e.to_string()))
    }

    pub fn program_by_id(&self, id: u32) -> Option<&CatalogProgram> {
        self.programs.iter().find(|p| p.program.id == id)
    }
}
