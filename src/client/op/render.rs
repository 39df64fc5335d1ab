//! What `op list` and `op show` print: a table with a column per field, padded to its widest
//! value, and an operation as pretty JSON in the record's own field order. Pure.

use crate::ops::model::Operation;

const HEADINGS: [&str; 5] = ["CMD ID", "ENTITY", "OPERATION", "STATUS", "UPDATED"];
const GAP: &str = "  ";

/// `op list`: a heading line, then a line per operation, each ending with a newline.
pub fn table(ops: &[Operation]) -> String {
    let rows: Vec<[String; 5]> = ops
        .iter()
        .map(|op| {
            [
                op.cmd_id.clone(),
                op.entity.as_str().to_owned(),
                op.operation.clone(),
                op.status.clone(),
                op.updated.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADINGS.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headings = HEADINGS.map(str::to_owned);
    for row in std::iter::once(&headings).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                line.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `op show`: the operation as pretty JSON, history included, without a final newline.
pub fn show(op: &Operation) -> String {
    serde_json::to_string_pretty(op).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::model::Transition;
    use crate::twin::time::Timestamp;

    fn op(cmd_id: &str, entity: &str, operation: &str, status: &str, ms: i64) -> Operation {
        let t = Timestamp::from_millis(ms);
        Operation {
            cmd_id: cmd_id.into(),
            entity: entity.parse().unwrap(),
            operation: operation.into(),
            status: status.into(),
            reason: None,
            topic: format!("te/{entity}/cmd/{operation}/{cmd_id}"),
            from_file: None,
            file: None,
            tedge_url: None,
            remote_url: None,
            sha256: None,
            payload: Default::default(),
            timeout_s: 60,
            keep_file: false,
            created: t,
            updated: t,
            notified: None,
            cleared: None,
            history: vec![Transition {
                status: status.into(),
                time: t,
                reason: None,
            }],
        }
    }

    #[test]
    fn the_table_pads_each_column_to_its_widest_value() {
        let ops = [
            op("a", "device/child1//", "restart", "successful", 0),
            op(
                "cli-1700000000000-0aff",
                "device/c2//",
                "firmware_update",
                "executing",
                1_700_000_000_123,
            ),
        ];
        assert_eq!(
            table(&ops),
            "CMD ID                  ENTITY           OPERATION        STATUS      UPDATED\n\
             a                       device/child1//  restart          successful  1970-01-01T00:00:00.000Z\n\
             cli-1700000000000-0aff  device/c2//      firmware_update  executing   2023-11-14T22:13:20.123Z\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_heading() {
        assert_eq!(table(&[]), "CMD ID  ENTITY  OPERATION  STATUS  UPDATED\n");
    }

    #[test]
    fn show_is_the_record_as_pretty_json_in_field_order() {
        let text = show(&op("a", "device/child1//", "restart", "init", 0));
        assert!(text.starts_with("{\n  \"cmd_id\": \"a\",\n  \"entity\": \"device/child1//\","));
        assert!(text.ends_with("\n  ]\n}"), "{text}");
        let back: Operation = serde_json::from_str(&text).unwrap();
        assert_eq!(back, op("a", "device/child1//", "restart", "init", 0));
    }
}
