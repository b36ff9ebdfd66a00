//! The rule loader: any text as a rule file, then, when it loads, the
//! rule's own tests and the detector over a few events.

use std::sync::Arc;

use trailwatch_core::rules::{run_tests, Detector, RuleSet, RuleSource};
use trailwatch_core::Event;

const EVENTS: [&str; 2] = [
    r#"{"eventVersion":"1.09","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice","accountId":"111122223333","accessKeyId":"AKIAFUZZ","userName":"alice"},"eventTime":"2024-01-15T12:01:00Z","eventSource":"iam.amazonaws.com","eventName":"CreateUser","awsRegion":"us-east-1","sourceIPAddress":"203.0.113.7","requestParameters":{"userName":"mallory","tags":[{"key":"a","value":1.5}]},"eventID":"f1","readOnly":false,"recipientAccountId":"111122223333"}"#,
    r#"{"eventVersion":"1.09","userIdentity":{"type":"Root","arn":"arn:aws:iam::111122223333:root","accountId":"111122223333"},"eventTime":"2024-01-15T12:02:00Z","eventSource":"signin.amazonaws.com","eventName":"ConsoleLogin","awsRegion":"us-east-1","responseElements":{"ConsoleLogin":"Failure"},"additionalEventData":{"MFAUsed":"No"},"errorMessage":"Failed authentication","eventID":"f2","recipientAccountId":"111122223333"}"#,
];

pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = RuleSource { path: "fuzz.yml".into(), text: text.to_owned() };
    let set = match RuleSet::load(&[source]) {
        Ok(set) => set,
        Err(errors) => {
            assert!(!errors.is_empty(), "a refused rule file says why");
            for e in &errors {
                assert!(e.to_string().starts_with("fuzz.yml"), "an error names the file: {e}");
            }
            return;
        }
    };
    let _ = run_tests(&set);
    let mut detector = Detector::new(Arc::new(set));
    let mut out = Vec::new();
    for (i, raw) in EVENTS.iter().enumerate() {
        let event = Event::from_record(i, raw.as_bytes(), "111122223333").expect("the fuzz events are valid");
        detector.check(&event, None, &mut out);
    }
}
