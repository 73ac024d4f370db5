"""Agent configuration: typed values, environment overrides, and errors that name file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync.ports import VerifyMode
from gitsync.runtime.config import ConfigError, Provider, load

FULL = """\
repo:
  url: https://git.example.com/org/deploy.git
  branch: main
  auth: {tokenFile: /etc/gitsync/token}
  verify: {allowedSignersFile: /etc/gitsync/signers}
environments:
  - name: staging
  - {name: prod, apps: [podinfo]}
pollInterval: 30s
webhooks:
  github: {secretFile: /etc/gitsync/gh}
listen: 127.0.0.1:9000
selfHeal: false
historyLimit: 2000
leaderElection: {enabled: true, identity: pod-a}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_full_config_is_typed(tmp_path: Path) -> None:
    config = load(write(tmp_path, FULL), environ={})
    assert config.repo.url == "https://git.example.com/org/deploy.git"
    assert config.repo.auth.token_file == Path("/etc/gitsync/token")
    assert config.repo.verify.mode is VerifyMode.SSH
    both = FULL.replace("{allowedSignersFile: /etc/gitsync/signers}", "{allowedSignersFile: /s, gpgKeyring: /g}")
    assert load(write(tmp_path, both), environ={}).repo.verify.mode is VerifyMode.SSH_OR_GPG
    assert [(e.name, e.apps) for e in config.environments] == [("staging", ()), ("prod", ("podinfo",))]
    assert config.poll_interval == 30.0
    assert config.webhook_secrets == {Provider.GITHUB: Path("/etc/gitsync/gh")}
    assert config.listen_host_port == ("127.0.0.1", 9000)
    assert config.self_heal is False and config.prune is True
    assert config.history_limit == 2000
    assert config.leader.enabled and config.leader.identity == "pod-a"
    assert config.drift_watch and config.create_namespaces and config.kubeconfig is None


def test_environment_overrides_win(tmp_path: Path) -> None:
    env = {
        "GITSYNC_REPO_URL": "file:///srv/repo.git",
        "GITSYNC_POLL_INTERVAL": "2s",
        "GITSYNC_ENVIRONMENTS": "qa, prod",
        "GITSYNC_SELF_HEAL": "true",
        "POD_NAME": "gitsync-abc",
        "POD_NAMESPACE": "ops",
    }
    config = load(
        write(tmp_path, FULL.replace("identity: pod-a", "enabled: false").replace("enabled: true, ", "")), env
    )
    assert config.repo.url == "file:///srv/repo.git"
    assert config.poll_interval == 2.0
    assert [e.name for e in config.environments] == ["qa", "prod"]
    assert config.self_heal is True
    assert config.leader.identity == "gitsync-abc" and config.leader.namespace == "ops"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            FULL.replace("pollInterval: 30s", "pollInterval: soon"),
            "agent.yaml:9: pollInterval: expected a duration like 30s",
        ),
        (FULL.replace("  url: https://git.example.com/org/deploy.git\n", ""), "agent.yaml:1: url: required"),
        (FULL.replace("selfHeal: false", "selfHeal: maybe"), "agent.yaml:13: selfHeal: expected true or false"),
        (FULL.replace("  github:", "  gogs:"), "agent.yaml:11: gogs: unknown provider"),
        (FULL.replace("historyLimit: 2000", "historyLimt: 2000"), "agent.yaml:14: historyLimt: unknown field"),
        (FULL.replace("branch: main", "branch: --upload-pack=evil"), "agent.yaml:3: branch: not a valid branch name"),
        (FULL.replace("listen: 127.0.0.1:9000", "listen: nine"), "agent.yaml:12: listen: expected host:port"),
        (FULL.replace("  - name: staging\n  - {name: prod, apps: [podinfo]}\n", ""), "agent.yaml:6: environments:"),
        ("repo: [\n", "agent.yaml:2: config: invalid YAML"),
        (
            FULL.replace("{tokenFile: /etc/gitsync/token}", "{sshKeyFile: /k}"),
            "agent.yaml:4: sshKeyFile: needs knownHostsFile",
        ),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text), environ={})
    assert str(info.value).startswith(message), str(info.value)


def test_a_bad_override_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^\$GITSYNC_POLL_INTERVAL: pollInterval: expected a duration"):
        load(write(tmp_path, FULL), environ={"GITSYNC_POLL_INTERVAL": "often"})


def test_protected_namespaces_are_the_clusters_and_the_agents_own_unless_allowed(tmp_path: Path) -> None:
    minimal = "repo: {url: https://git.example.com/d.git}\nenvironments: [staging]\n"
    config = load(write(tmp_path, minimal), environ={"POD_NAMESPACE": "delivery"})
    assert config.protected_namespaces == {"kube-system", "kube-public", "kube-node-lease", "delivery"}
    allowing = load(write(tmp_path, minimal + "allowProtectedNamespaces: [kube-system]\n"), environ={})
    assert allowing.protected_namespaces == {"kube-public", "kube-node-lease", "gitsync-system"}
    with pytest.raises(ConfigError, match=r"agent.yaml:3: allowProtectedNamespaces: expected a list of namespace"):
        load(write(tmp_path, minimal + "allowProtectedNamespaces: kube-system\n"), environ={})


CLUSTERS = """\
repo: {url: https://git.example.com/org/deploy.git}
environments:
  - staging
  - {name: prod, cluster: prod-eu}
clusters:
  prod-eu: {kubeconfigSecret: prod-eu-kubeconfig/kubeconfig}
  staging: {home: true}
  lab: {kubeconfigFile: /etc/gitsync/lab.kubeconfig}
sharding: {shards: 3}
"""


def test_clusters_and_sharding_are_typed(tmp_path: Path) -> None:
    config = load(write(tmp_path, CLUSTERS), environ={})
    assert [(e.name, e.cluster) for e in config.environments] == [("staging", ""), ("prod", "prod-eu")]
    assert config.clusters["prod-eu"].kubeconfig_secret == "prod-eu-kubeconfig/kubeconfig"
    assert config.clusters["staging"].home
    assert config.clusters["lab"].kubeconfig_file == Path("/etc/gitsync/lab.kubeconfig")
    assert config.sharding.shards == 3
    assert load(write(tmp_path, CLUSTERS), environ={"GITSYNC_SHARDS": "5"}).sharding.shards == 5


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("cluster: prod-eu", "cluster: nowhere"), "agent.yaml:4: cluster: 'nowhere' is not defined in clusters"),
        (("{home: true}", "{home: true, kubeconfigFile: /x}"), "agent.yaml:7: staging: set exactly one of"),
        (
            ("prod-eu-kubeconfig/kubeconfig", "just-a-name"),
            "agent.yaml:6: kubeconfigSecret: expected <secret name>/<key>",
        ),
        (("shards: 3", "shards: -1"), "agent.yaml:9: shards: expected an integer >= 0"),
    ],
)
def test_cluster_and_sharding_errors_name_the_line(tmp_path: Path, edit: tuple[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(write(tmp_path, CLUSTERS.replace(*edit)), environ={})
    assert str(e.value).startswith(message)
