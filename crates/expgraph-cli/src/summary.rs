//! What a command prints on stdout: one human summary, or with `--json` one JSON object.
//! Logs and progress go to stderr.

/// The result of a command, in both forms.
#[derive(Debug)]
pub struct Summary {
    /// A few lines for a person.
    pub human: String,
    /// The same facts for a program.
    pub json: serde_json::Value,
}

impl Summary {
    /// A summary from its two forms.
    pub fn new(human: impl Into<String>, json: serde_json::Value) -> Self {
        Self { human: human.into(), json }
    }

    /// Print the requested form on stdout.
    pub fn print(&self, json: bool) {
        if json {
            println!("{}", self.json);
        } else if !self.human.is_empty() {
            println!("{}", self.human);
        }
    }
}
