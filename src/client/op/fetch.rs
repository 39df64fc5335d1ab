//! `op fetch <cmd_id> LOCAL`: the file a child sent for an upload-type operation
//! (`config_snapshot`, `log_upload`), downloaded from the operation's `file` in the agent's
//! store once it is `successful`, with the file client's verified, resumable `get`.

use std::path::Path;

use super::OpError;
use crate::client::{Base, Client, Downloaded};
use crate::ops::model::{is_upload, Operation, SUCCESSFUL};

/// The store path of the file `op` received, if it has one to fetch.
pub fn fetchable(op: &Operation) -> Result<&str, OpError> {
    if !is_upload(&op.operation) {
        return Err(OpError::NotAnUpload {
            cmd_id: op.cmd_id.clone(),
            operation: op.operation.clone(),
        });
    }
    if op.status != SUCCESSFUL {
        return Err(OpError::NotSuccessful {
            cmd_id: op.cmd_id.clone(),
            status: op.status.clone(),
        });
    }
    op.file.as_deref().ok_or_else(|| OpError::NoFile {
        cmd_id: op.cmd_id.clone(),
    })
}

impl Client {
    pub async fn fetch_operation(
        &self,
        base: &Base,
        cmd_id: &str,
        local: &Path,
    ) -> Result<Downloaded, OpError> {
        let op = self.operation(base, cmd_id).await?;
        let path = fetchable(&op)?;
        Ok(self.get(&base.file_url(path), local).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::twin::time::Timestamp;

    fn op(operation: &str, status: &str, file: Option<&str>) -> Operation {
        let t = Timestamp::from_millis(0);
        serde_json::from_value(serde_json::json!({
            "cmd_id": "c1", "entity": "device/child1//", "operation": operation,
            "status": status, "topic": "t", "file": file, "payload": {}, "timeout_s": 60,
            "keep_file": false, "created": t, "updated": t, "history": [],
        }))
        .unwrap()
    }

    #[test]
    fn only_a_successful_upload_type_operation_has_a_file_to_fetch() {
        let path = "child1/config_snapshot/mosquitto-c1";
        assert_eq!(
            fetchable(&op("config_snapshot", "successful", Some(path))).unwrap(),
            path
        );
        assert_eq!(
            fetchable(&op("firmware_update", "successful", Some("x")))
                .unwrap_err()
                .to_string(),
            "operation c1 is a firmware_update: only config_snapshot and log_upload operations \
             receive a file to fetch"
        );
        assert_eq!(
            fetchable(&op("log_upload", "executing", Some(path)))
                .unwrap_err()
                .to_string(),
            "operation c1 is executing: its file can be fetched once it is successful"
        );
        assert!(matches!(
            fetchable(&op("log_upload", "successful", None)),
            Err(OpError::NoFile { .. })
        ));
    }
}
