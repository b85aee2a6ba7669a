//! `snapstore completions SHELL` and `snapstore man`: shell completions and a roff man page,
//! both generated from the clap definition, so they name every subcommand and flag there is.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;

use super::Cli;

#[derive(Debug, clap::Args)]
pub(crate) struct CompletionsArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Prints the completion script for `args.shell` on stdout.
pub(crate) fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = Cli::command();
    let mut out = std::io::stdout().lock();
    clap_complete::generate(args.shell, &mut command, "snapstore", &mut out);
    out.flush()?;
    Ok(())
}

/// Prints the man page, snapstore(1), with a section for each subcommand, on stdout.
pub(crate) fn man() -> Result<()> {
    let command = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        // Each subcommand's description, synopsis and options, as one section of the page
        // whose own headings are subsections.
        let name = sub.get_name().to_string();
        let full = format!("snapstore {name}");
        let man = clap_mangen::Man::new(sub.clone().bin_name(full.clone()).display_name(full));
        let mut section = Vec::new();
        man.render_description_section(&mut section)?;
        man.render_synopsis_section(&mut section)?;
        man.render_options_section(&mut section)?;
        let section = String::from_utf8(section)?.replace("\n.SH ", "\n.SS ");
        let section = section
            .strip_prefix(".SH ")
            .map_or(section.clone(), |rest| format!(".SS {rest}"));
        writeln!(page, ".SH \"SNAPSTORE {}\"", name.to_uppercase())?;
        page.write_all(section.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&page)?;
    out.flush()?;
    Ok(())
}
