package bootstrap

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/kforge/kforge/internal/spec"
)

// RecipeEtcdBackupSchedule installs scheduled etcd snapshots on a member.
const RecipeEtcdBackupSchedule = "etcd-backup-schedule"

// RecipeEtcdBackupAgent is the script the schedule runs on the member.
const RecipeEtcdBackupAgent = "etcd-backup-agent"

// Where etcd-backup-schedule installs the agent and its systemd units.
const (
	EtcdBackupAgentPath   = "/usr/local/sbin/kforge-etcd-backup"
	EtcdBackupUnit        = "kforge-etcd-backup"
	etcdBackupServicePath = "/etc/systemd/system/" + EtcdBackupUnit + ".service"
	etcdBackupTimerPath   = "/etc/systemd/system/" + EtcdBackupUnit + ".timer"
)

// EtcdBackupScheduleParams configures scheduled snapshots on one member.
type EtcdBackupScheduleParams struct {
	// Cluster is the etcd cluster; Member the member the agent runs on
	// (it asks its own client URL whether it leads).
	Cluster EtcdCluster
	Member  Node
	// PKIDir holds the client certificate (default DefaultEtcdPKIDir).
	PKIDir string
	EtcdBackupTools
	// ClusterName is the Kubernetes cluster's: snapshots are stored as
	// <Prefix>/<ClusterName>/<time>-rev<revision>.db (etcdbackup's names).
	ClusterName string
	// Bucket, Prefix and Region say where in S3; DNSSuffix is the
	// partition's (default amazonaws.com).
	Bucket, Prefix, Region, DNSSuffix string
	// Every is the interval between two snapshots; Keep how many the
	// leader keeps (older ones are deleted after each upload).
	Every time.Duration
	Keep  int
}

var (
	clusterNameRE = regexp.MustCompile(`^[a-z]([a-z0-9-]*[a-z0-9])?$`)
	bucketRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$`)
	keyPrefixRE   = regexp.MustCompile(`^[A-Za-z0-9._/-]*$`)
	regionRE      = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+$`)
)

func (p EtcdBackupScheduleParams) withDefaults() EtcdBackupScheduleParams {
	p.Cluster = p.Cluster.withDefaults()
	p.PKIDir = strings.TrimSuffix(orDefault(p.PKIDir, DefaultEtcdPKIDir), "/")
	p.EtcdBackupTools = p.EtcdBackupTools.withDefaults()
	p.DNSSuffix = orDefault(p.DNSSuffix, "amazonaws.com")
	p.Prefix = strings.Trim(p.Prefix, "/")
	return p
}

func (p EtcdBackupScheduleParams) validate() error {
	if err := p.Cluster.validate(); err != nil {
		return err
	}
	if err := p.Member.validate("etcd member", true); err != nil {
		return err
	}
	for _, path := range append(p.paths(), p.PKIDir) {
		if !absPathRE.MatchString(path) {
			return fmt.Errorf("%q is not an absolute path", path)
		}
	}
	switch {
	case !clusterNameRE.MatchString(p.ClusterName):
		return fmt.Errorf("invalid cluster name %q", p.ClusterName)
	case !bucketRE.MatchString(p.Bucket):
		return fmt.Errorf("invalid bucket name %q", p.Bucket)
	case !keyPrefixRE.MatchString(p.Prefix) || strings.Contains(p.Prefix, "//"):
		return fmt.Errorf("the key prefix %q may hold only letters, digits and . _ - /", p.Prefix)
	case !regionRE.MatchString(p.Region):
		return fmt.Errorf("invalid region %q", p.Region)
	case p.Every < spec.MinBackupEvery || p.Every > spec.MaxBackupEvery:
		return fmt.Errorf("the interval %s is not between %s and %s", p.Every, spec.MinBackupEvery, spec.MaxBackupEvery)
	case p.Keep < 1 || p.Keep > spec.MaxBackupKeep:
		return fmt.Errorf("the retention %d is not between 1 and %d", p.Keep, spec.MaxBackupKeep)
	}
	return nil
}

// KeyPrefix is where the member's snapshots go: <prefix>/<cluster>/.
func (p EtcdBackupScheduleParams) KeyPrefix() string {
	p = p.withDefaults()
	if p.Prefix == "" {
		return p.ClusterName + "/"
	}
	return p.Prefix + "/" + p.ClusterName + "/"
}

// bucketURL is the bucket's endpoint: virtual-hosted, or path-style for a
// bucket whose name has a dot (TLS names cannot match it otherwise).
func (p EtcdBackupScheduleParams) bucketURL() string {
	if strings.Contains(p.Bucket, ".") {
		return fmt.Sprintf("https://s3.%s.%s/%s", p.Region, p.DNSSuffix, p.Bucket)
	}
	return fmt.Sprintf("https://%s.s3.%s.%s", p.Bucket, p.Region, p.DNSSuffix)
}

type etcdBackupAgentScript struct {
	EtcdBackupScheduleParams
	Endpoint, BucketURL, KeyPrefix, KeyPrefixQuery, SnapshotKeyRE string
}

// The agent: on the leader only, a snapshot through the member's own
// client URL, checked, stored in S3 with SSE and the checksum and revision
// kforge's restore checks, then the oldest beyond the retention deleted.
// Credentials come from the instance profile (IMDSv2); the standard AWS
// variables AWS_EC2_METADATA_SERVICE_ENDPOINT and AWS_ENDPOINT_URL_S3 (or
// AWS_ENDPOINT_URL) point it elsewhere, as they do the AWS SDKs.
const etcdBackupAgentBody = `
empty_sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
s3_key_id='' s3_secret='' s3_token=''

# json_field NAME prints the first string or number value of NAME in the
# JSON on standard input.
json_field() {
	sed -n 's/.*"'"$1"'"[[:space:]]*:[[:space:]]*"\{0,1\}\([^",}]*\).*/\1/p' | head -n 1
}

# credentials reads the instance profile's credentials (IMDSv2).
credentials() {
	local imds token role doc
	imds=${AWS_EC2_METADATA_SERVICE_ENDPOINT:-http://169.254.169.254}
	imds=${imds%/}
	token=$(curl -fsS --max-time 5 --retry 3 -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' "$imds/latest/api/token") ||
		kforge_fail "no instance metadata token (IMDSv2) from $imds"
	role=$(curl -fsS --max-time 5 --retry 3 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/iam/security-credentials/") ||
		kforge_fail "this VM has no instance profile: the etcd VMs of a cluster with --etcd-backups run with kforge-<cluster>-ha-etcd"
	role=${role%%$'\n'*}
	doc=$(curl -fsS --max-time 5 --retry 3 -H "X-aws-ec2-metadata-token: $token" "$imds/latest/meta-data/iam/security-credentials/$role") ||
		kforge_fail "no credentials for the instance profile's role $role"
	s3_key_id=$(json_field AccessKeyId <<<"$doc")
	s3_secret=$(json_field SecretAccessKey <<<"$doc")
	s3_token=$(json_field Token <<<"$doc")
	[[ -n $s3_key_id && -n $s3_secret ]] || kforge_fail "the instance profile's credentials are incomplete"
}

# s3_url KEY prints the URL of KEY in the bucket.
s3_url() {
	local base=${AWS_ENDPOINT_URL_S3:-${AWS_ENDPOINT_URL:-}}
	if [[ -n $base ]]; then
		base="${base%/}/"{{q .Bucket}}
	else
		base={{q .BucketURL}}
	fi
	printf '%s/%s' "$base" "$1"
}

# s3 METHOD URL PAYLOAD-SHA256 [CURL-ARGS...] sends a signed request; the
# secrets reach curl on standard input, never on its command line.
s3() {
	local method=$1 url=$2 payload=$3
	shift 3
	{
		printf 'user = "%s:%s"\n' "$s3_key_id" "$s3_secret"
		if [[ -n $s3_token ]]; then
			printf 'header = "x-amz-security-token: %s"\n' "$s3_token"
		fi
	} | curl -fsS --retry 5 --max-time 1800 -K - --aws-sigv4 {{q (printf "aws:amz:%s:s3" .Region)}} \
		-X "$method" -H "x-amz-content-sha256: $payload" "$@" "$url"
}

# prune deletes the oldest snapshots beyond the retention. Keys list
# oldest first; a truncated first page holds only snapshots to delete.
prune() {
	local keep={{.Keep}} list truncated key
	local -a keys
	while :; do
		list=$(s3 GET "$(s3_url '')?list-type=2&prefix="{{q .KeyPrefixQuery}} "$empty_sha256") ||
			kforge_fail "cannot list s3://{{.Bucket}}/{{.KeyPrefix}}"
		mapfile -t keys < <(grep -o '<Key>[^<]*</Key>' <<<"$list" | sed 's/<[^>]*>//g' | grep -E {{q .SnapshotKeyRE}} || true)
		truncated=$(grep -c '<IsTruncated>true</IsTruncated>' <<<"$list" || true)
		((${#keys[@]} > keep)) || return 0
		for key in "${keys[@]:0:${#keys[@]}-keep}"; do
			s3 DELETE "$(s3_url "$key")" "$empty_sha256" >/dev/null || kforge_fail "cannot delete s3://{{.Bucket}}/$key"
			kforge_log "deleted s3://{{.Bucket}}/$key (beyond the last $keep)"
		done
		((truncated > 0)) || return 0
	done
}

main() {
	local endpoint={{q .Endpoint}} pki={{q .PKIDir}} dir={{q .Dir}}
	local status member leader snap stamp rev sum key
	umask 077
	status=$(ETCDCTL_API=3 {{q .Etcdctl}} --endpoints="$endpoint" \
		--cacert="$pki/ca.crt" --cert="$pki/client.crt" --key="$pki/client.key" \
		--dial-timeout=5s --command-timeout=30s endpoint status --write-out=fields) ||
		kforge_fail "cannot ask the etcd member at $endpoint for its status"
	member=$(awk -F ' : ' '$1 == "\"MemberID\"" { print $2 }' <<<"$status")
	leader=$(awk -F ' : ' '$1 == "\"Leader\"" { print $2 }' <<<"$status")
	[[ -n $member && -n $leader ]] || kforge_fail "etcdctl endpoint status named no member or leader"
	if [[ $member != "$leader" ]]; then
		kforge_log "this member does not lead the etcd cluster: the leader takes the snapshot"
		return 0
	fi
	mkdir -p "$dir"
	snap="$dir/scheduled.db"
	stamp=$(date -u +%Y%m%dT%H%M%SZ)
	status=$(kforge_etcd_snapshot {{q .Etcdctl}} {{q .Etcdutl}} "$endpoint" "$pki" "$snap")
	rev=$(json_field revision <<<"$status")
	[[ $rev =~ ^[0-9]+$ ]] || kforge_fail "snapshot status printed no revision"
	sum=$(sha256sum "$snap" | cut -d ' ' -f 1)
	key={{q .KeyPrefix}}"$stamp-rev$rev.db"
	credentials
	s3 PUT "$(s3_url "$key")" "$sum" --upload-file "$snap" \
		-H 'content-type: application/octet-stream' -H 'x-amz-server-side-encryption: AES256' \
		-H "x-amz-meta-sha256: $sum" -H "x-amz-meta-revision: $rev" -H {{q (printf "x-amz-meta-kforge-cluster: %s" .ClusterName)}} >/dev/null ||
		kforge_fail "cannot store the snapshot at s3://{{.Bucket}}/$key"
	rm -f "$snap"
	kforge_log "stored s3://{{.Bucket}}/$key (revision $rev)"
	prune
	echo "s3://{{.Bucket}}/$key"
}
`

// RenderEtcdBackupAgent renders the script the schedule runs on a member
// (installed by etcd-backup-schedule; rendered alone for tests).
func RenderEtcdBackupAgent(p EtcdBackupScheduleParams) (string, error) {
	p = p.withDefaults()
	if err := p.validate(); err != nil {
		return "", fmt.Errorf("%s: %w", RecipeEtcdBackupAgent, err)
	}
	prefix := p.KeyPrefix()
	return renderScript(RecipeEtcdBackupAgent, etcdBackupAgentBody, etcdBackupAgentScript{
		EtcdBackupScheduleParams: p,
		Endpoint:                 httpsURL(p.Member.privateAddr(), p.Cluster.ClientPort),
		BucketURL:                p.bucketURL(),
		KeyPrefix:                prefix,
		KeyPrefixQuery:           strings.ReplaceAll(prefix, "/", "%2F"),
		SnapshotKeyRE:            "^" + regexp.QuoteMeta(prefix) + `[0-9]{8}T[0-9]{6}Z-rev[0-9]+\.db$`,
	})
}

type etcdBackupScheduleScript struct {
	Agent, Service, Timer []byte
	Summary               string
}

// EtcdBackupUnits renders the schedule's systemd service and timer: the
// first snapshot 15 minutes after the timer starts (or after a boot), then
// one every p.Every; the members' timers are not aligned, and only the
// leader of the moment uploads.
func EtcdBackupUnits(p EtcdBackupScheduleParams) (service, timer []byte) {
	p = p.withDefaults()
	where := "s3://" + p.Bucket + "/" + p.KeyPrefix()
	service = []byte(fmt.Sprintf(`[Unit]
Description=kforge: etcd snapshot of cluster %[1]s to %[2]s
After=network-online.target etcd.service
Wants=network-online.target

[Service]
Type=oneshot
ExecStart=%[3]s
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
TimeoutStartSec=1h
PrivateTmp=yes
`, p.ClusterName, where, EtcdBackupAgentPath))
	timer = []byte(fmt.Sprintf(`[Unit]
Description=kforge: etcd snapshot of cluster %[1]s every %[2]s, the last %[3]d kept

[Timer]
OnActiveSec=15min
OnBootSec=15min
OnUnitActiveSec=%[4]ds
RandomizedDelaySec=60
AccuracySec=1min

[Install]
WantedBy=timers.target
`, p.ClusterName, p.Every, p.Keep, seconds(p.Every)))
	return service, timer
}

const etcdBackupScheduleBody = `
main() {
	kforge_changed=0
	{{write "` + EtcdBackupAgentPath + `" "0700" "root:root" .Agent}}
	{{write "` + etcdBackupServicePath + `" "0644" "root:root" .Service}}
	{{write "` + etcdBackupTimerPath + `" "0644" "root:root" .Timer}}
	if ((kforge_changed)); then
		systemctl daemon-reload
	fi
	systemctl enable --now ` + EtcdBackupUnit + `.timer
	if ((kforge_changed)); then
		systemctl restart ` + EtcdBackupUnit + `.timer
	fi
	echo {{q .Summary}}
}
`

// RenderEtcdBackupSchedule renders etcd-backup-schedule: the agent and its
// systemd service and timer on one member, the timer enabled and started
// (restarted when anything changed, so that a new interval counts).
func RenderEtcdBackupSchedule(p EtcdBackupScheduleParams) (string, error) {
	p = p.withDefaults()
	agent, err := RenderEtcdBackupAgent(p)
	if err != nil {
		return "", err
	}
	service, timer := EtcdBackupUnits(p)
	return renderScript(RecipeEtcdBackupSchedule, etcdBackupScheduleBody, etcdBackupScheduleScript{
		Agent: []byte(agent), Service: service, Timer: timer,
		Summary: fmt.Sprintf("etcd snapshots of %s every %s to s3://%s/%s, the last %d kept", p.Member.Name, p.Every, p.Bucket, p.KeyPrefix(), p.Keep),
	})
}
