"""The ssh launcher's hosts file: whole-target validation and ``--`` before the target."""

from __future__ import annotations

import shlex

import pytest

from gossipml.cli import main
from gossipml.launch.ssh import HostSlot, build_ssh_commands, check_target, parse_hosts


@pytest.mark.parametrize("target", ["host", "h-1.lab.example", "10.0.0.2", "alice@node7",
                                    "svc_user.x-1@h", "a" * 63])
def test_plain_targets_pass(target):
    assert check_target(target) == target
    assert parse_hosts(f"{target} slots=2")[1].target == target


@pytest.mark.parametrize("target", [
    "-oProxyCommand=touch${IFS}/tmp/pwned", "-oProxyCommand=sh", "alice@-oProxyCommand=x",
    "-host", "host-", "@host", "alice@", "a@b@c", "host;id", "host|id", "host&", "$(id)",
    "`id`", "host'", 'host"', "host\\", "h/ost", "host:22", "[::1]", "ho*st", "hóst",
    "host\x00", "-lroot@host", "user:pw@host", "a" * 300])
def test_hostile_targets_are_refused_naming_the_line(target):
    with pytest.raises(ValueError, match=r"hosts:3: .* is not a plain \[user@\]host"):
        parse_hosts(f"# lab\ngood-host\n{target} slots=1\n", "hosts")


def test_options_and_spaces_on_a_line_are_refused():
    with pytest.raises(ValueError, match=r"hosts file:1: unknown option 'ProxyCommand=sh'"):
        parse_hosts("host ProxyCommand=sh")
    with pytest.raises(ValueError, match=r"hosts file:2: unknown option"):
        parse_hosts("ok\nhost -oProxyCommand=sh")
    with pytest.raises(ValueError, match="unknown option 'slots=²'"):
        parse_hosts("host slots=²")


def test_commands_end_ssh_options_before_the_target_and_recheck_it():
    cmds = build_ssh_commands(parse_hosts("alice@h1\nh2"), "p.toml")
    for c in cmds:
        i = c.argv.index(c.target)
        assert c.argv[i - 1] == "--" and c.argv.count("--") == 1 and i == len(c.argv) - 2
    forged = [HostSlot(0, "-oProxyCommand=sh", "-oProxyCommand=sh", 0)]
    with pytest.raises(ValueError, match="peer 0: '-oProxyCommand=sh'"):
        build_ssh_commands(forged, "p.toml")


def test_launch_dry_run_prints_dashdash_lines(tmp_path, capsys):
    (tmp_path / "hosts").write_text("alice@10.0.0.1 slots=2\n10.0.0.2\n")
    code = main(["launch", "--hosts", str(tmp_path / "hosts"), "--peers-file",
                 str(tmp_path / "peers.toml"), "--workdir", "/srv/g ml", "--dry-run"])
    assert code == 0
    lines = [shlex.split(l) for l in capsys.readouterr().out.splitlines() if not l.startswith("#")]
    assert [l[l.index("--") + 1] for l in lines] == ["alice@10.0.0.1", "alice@10.0.0.1", "10.0.0.2"]
    assert shlex.split(lines[2][-1])[:3] == ["cd", "/srv/g ml", "&&"]


def test_launch_refuses_a_hostile_hosts_file_and_starts_nothing(tmp_path, capsys):
    (tmp_path / "hosts").write_text("ok-host\n-oProxyCommand=touch${IFS}/tmp/x\n")
    code = main(["launch", "--hosts", str(tmp_path / "hosts"), "--peers-file",
                 str(tmp_path / "peers.toml"), "--dry-run"])
    err = capsys.readouterr().err
    assert code != 0 and f"{tmp_path / 'hosts'}:2:" in err and "ProxyCommand" in err
    assert not (tmp_path / "peers.toml").exists()
