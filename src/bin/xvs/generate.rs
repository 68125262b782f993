//! `xvs generate man DIR` and `xvs generate completions DIR` (hidden): the
//! man pages and shell completions the Debian package ships, made from the
//! command line itself so that they cannot drift from it.
//!
//! - `man`: `xvs.8` and `xvs-director.8` from the clap command
//!   (`clap_mangen`); `xvs-ipvsadm.8` from ipvsadm's usage text, which is
//!   not a clap command (the package links `ipvsadm.8.gz` to it through the
//!   ipvsadm alternative).
//! - `completions`: `xvs.bash`, `_xvs` (zsh) and `xvs.fish` (`clap_complete`).

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;
use clap_complete::Shell;
use xvs::control::ipvsadm::render;
use xvs::control::socket::DEFAULT_SOCKET;

use super::Cli;

/// Man section: xvs is a system administration command, as ipvsadm(8).
const SECTION: &str = "8";

pub fn man_pages(dir: &Path) -> Result<Vec<String>, String> {
    create_dir(dir)?;
    let mut cmd = Cli::command();
    cmd.build();
    let mut written = Vec::new();
    let mut page = |name: &str, text: Vec<u8>| -> Result<(), String> {
        let file = format!("{name}.{SECTION}");
        write(&dir.join(&file), &text)?;
        written.push(file);
        Ok(())
    };
    page("xvs", render_man(cmd.clone(), "xvs")?)?;
    let director = cmd
        .find_subcommand("director")
        .cloned()
        .ok_or("no director subcommand")?;
    page("xvs-director", render_man(director, "xvs-director")?)?;
    page("xvs-ipvsadm", ipvsadm_page().into_bytes())?;
    Ok(written)
}

pub fn completions(dir: &Path) -> Result<Vec<String>, String> {
    create_dir(dir)?;
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let path =
            clap_complete::generate_to(shell, &mut public_command(), "xvs", dir).map_err(|e| {
                format!(
                    "cannot write the {shell} completions to {}: {e}",
                    dir.display()
                )
            })?;
        written.push(path.display().to_string());
    }
    Ok(written)
}

/// The command line as a person meets it: without the hidden
/// subcommands, which clap_complete would offer otherwise.
fn public_command() -> clap::Command {
    let full = Cli::command();
    let mut cmd = clap::Command::new("xvs")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(full.is_subcommand_required_set());
    if let Some(about) = full.get_about() {
        cmd = cmd.about(about.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        cmd = cmd.subcommand(sub.clone());
    }
    cmd
}

fn render_man(cmd: clap::Command, title: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd)
        .title(title.to_uppercase())
        .section(SECTION)
        .source(format!("xvs {}", env!("CARGO_PKG_VERSION")))
        .manual("System Administration")
        .render(&mut out)
        .map_err(|e| format!("cannot render the {title} man page: {e}"))?;
    Ok(out)
}

/// The ipvsadm front end's page: its synopsis, how it finds the director,
/// and the usage text `ipvsadm -h` prints, verbatim.
fn ipvsadm_page() -> String {
    let version = env!("CARGO_PKG_VERSION");
    let usage = render::usage();
    let mut s =
        format!(".TH XVS-IPVSADM {SECTION} \"\" \"xvs {version}\" \"System Administration\"\n");
    s.push_str(
        ".SH NAME\n\
         ipvsadm \\- the Linux Virtual Server administration command, for the xvs director\n\
         .SH SYNOPSIS\n\
         .B ipvsadm\n\
         [\\fB\\-\\-control\\-socket\\fR \\fIPATH\\fR] \\fIARGS\\fR...\n\
         .br\n\
         .B xvs ipvsadm\n\
         [\\fB\\-\\-control\\-socket\\fR \\fIPATH\\fR] \\fIARGS\\fR...\n\
         .SH DESCRIPTION\n\
         ipvsadm's command line, answered by a running \\fBxvs director\\fR instead of the \
         kernel's IPVS. Usage errors, \\fB\\-h\\fR and \\fB\\-v\\fR are answered locally with \
         ipvsadm's texts and exit statuses; every other command goes to the director over \
         its control socket, whose output and exit status are the command's.\n\
         .PP\n\
         The xvs package makes \\fI/usr/sbin/ipvsadm\\fR this command through the \
         \\fBipvsadm\\fR alternative (\\fBupdate\\-alternatives \\-\\-display ipvsadm\\fR), \
         unless another package's ipvsadm is installed there.\n\
         .SH OPTIONS\n\
         .TP\n\
         \\fB\\-\\-control\\-socket\\fR \\fIPATH\\fR\n\
         The director's control socket; only as the very first argument (ipvsadm has no \
         such option). Else \\fB$XVS_CONTROL_SOCKET\\fR, else \\fI",
    );
    s.push_str(&escape(DEFAULT_SOCKET));
    s.push_str("\\fR.\n.PP\nThe rest, as \\fBipvsadm \\-h\\fR prints it:\n.PP\n.nf\n");
    for line in usage.lines() {
        s.push_str(&escape(line));
        s.push('\n');
    }
    s.push_str(
        ".fi\n\
         .SH EXIT STATUS\n\
         The director's answer's status, as ipvsadm's; 2 when no director answers \
         (\"Can't initialize ipvs\"), as ipvsadm when it cannot reach IPVS.\n\
         .SH FILES\n\
         .TP\n\
         .I /etc/ipvsadm.rules\n\
         The rules the xvs service starts with, in \\fBipvsadm \\-S\\fR format; save the \
         running ones with \\fBipvsadm \\-S \\-n > /etc/ipvsadm.rules\\fR.\n\
         .SH SEE ALSO\n\
         .BR xvs (8),\n\
         .BR xvs\\-director (8)\n",
    );
    s
}

/// `text` as roff reads it literally: backslashes escaped, hyphens as
/// minus signs (options stay searchable and copy-pasteable), and no line
/// starting with a control character.
fn escape(text: &str) -> String {
    let s = text.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with(['.', '\'']) {
        format!("\\&{s}")
    } else {
        s
    }
}

fn create_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::File::create(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roff_control_characters_are_escaped() {
        assert_eq!(escape(".x -a \\n"), "\\&.x \\-a \\en");
        assert_eq!(escape("'q"), "\\&'q");
    }

    #[test]
    fn every_page_and_completion_is_written() {
        let dir = std::env::temp_dir().join(format!("xvs-generate-{}", std::process::id()));
        let pages = man_pages(&dir.join("man")).unwrap();
        assert_eq!(pages, ["xvs.8", "xvs-director.8", "xvs-ipvsadm.8"]);
        let director = std::fs::read_to_string(dir.join("man/xvs-director.8")).unwrap();
        assert!(director.contains("check\\-config"), "{director}");
        let ipvsadm = std::fs::read_to_string(dir.join("man/xvs-ipvsadm.8")).unwrap();
        assert!(ipvsadm.contains("\\-\\-add\\-service"), "{ipvsadm}");
        let shells = completions(&dir.join("completions")).unwrap();
        assert_eq!(shells.len(), 3);
        for f in ["xvs.bash", "_xvs", "xvs.fish"] {
            let text = std::fs::read_to_string(dir.join("completions").join(f)).unwrap();
            assert!(text.contains("director"), "{f}: {text}");
            assert!(!text.contains("generate"), "{f} offers a hidden command");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
