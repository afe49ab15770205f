package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/cloudint"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/test/testutil/awscheck"
	"github.com/kforge/kforge/test/testutil/sshfleet"
)

// This file proves the AWS cloud integration of ha-aws clusters (the
// cloud controller manager and the EBS CSI driver, package cloudint)
// through the emulator and the SSH fleet: what the kubelets are told, what
// is applied on the first control plane, the roles' policies, the subnets'
// tags, and --no-cloud-integration.

// TestHACloudIntegration: a kubeadm cluster with the cloud integration
// names its nodes by their private DNS names, with their provider IDs and
// an external cloud provider; applies the manifest on the first control
// plane after kubeadm init; waits for initialised nodes; its control
// planes' role carries exactly the documented policy and its workers' role
// none, and a re-run puts either back after a change; its subnets carry
// the ELB tags; and delete sweeps what the cloud controller and the CSI
// driver make.
func TestHACloudIntegration(t *testing.T) {
	t.Parallel()
	const name, region = "cloudy", "us-east-2"
	h := newHAEnv(t, region)
	create := []string{"create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm",
		"--control-planes", "2", "--workers", "1", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}
	h.MustRun(t, create...)

	byRole := instances(t, h.cfg, name)
	// Every node's kubeadm configuration, by VM name.
	configs := map[string]kubeadmNodeRegistration{}
	calls := append(append(h.fleet.CallsOf("kubeadm-init"), h.fleet.CallsOf("kubeadm-join-cp")...), h.fleet.CallsOf("kubeadm-join-worker")...)
	for _, c := range calls {
		configs[c.VM.Name] = nodeRegistrationOf(t, c)
	}
	for _, role := range []string{"cp", "wp"} {
		for _, in := range byRole[role] {
			vm := tagMap(in.Tags)["Name"]
			dns := aws.ToString(in.PrivateDnsName)
			if dns == "" {
				t.Fatalf("%s has no private DNS name in the emulator", vm)
			}
			reg, ok := configs[vm]
			if !ok {
				t.Errorf("%s ran no kubeadm init or join", vm)
				continue
			}
			if reg.Name != dns {
				t.Errorf("%s registers as node %q, want its private DNS name %q", vm, reg.Name, dns)
			}
			// The EBS CSI controller (in a pod, one hop further) reaches
			// the instance metadata with IMDSv2.
			if md := in.MetadataOptions; md == nil || md.HttpTokens != ec2types.HttpTokensStateRequired || aws.ToInt32(md.HttpPutResponseHopLimit) != 2 {
				t.Errorf("%s metadata options %+v: want IMDSv2 required with hop limit 2", vm, md)
			}
			wantID := "aws:///" + aws.ToString(in.Placement.AvailabilityZone) + "/" + aws.ToString(in.InstanceId)
			args := map[string]string{}
			for _, a := range reg.KubeletExtraArgs {
				args[a.Name] = a.Value
			}
			if args["cloud-provider"] != "external" || args["provider-id"] != wantID {
				t.Errorf("%s kubelet arguments %v, want cloud-provider=external and provider-id=%s", vm, args, wantID)
			}
		}
	}

	// The manifest is applied once, on cp-0, after kubeadm init, and it is
	// exactly cloudint's for this cluster.
	clouds := h.fleet.CallsOf("cloud-integration")
	if len(clouds) != 1 || clouds[0].VM.Name != name+"-cp-0" {
		t.Fatalf("cloud-integration ran %d times, want once on cp-0", len(clouds))
	}
	if init := h.fleet.CallsOf("kubeadm-init"); len(init) != 1 || !init[0].Time.Before(clouds[0].Time) {
		t.Error("the cloud integration was applied before kubeadm init")
	}
	applied := heredocAfter(t, string(clouds[0].Stdin), "base64 -d <<'KFORGE_EOF' | kubectl")
	release, err := bootstrap.KubernetesVersion(spec.DefaultK8sVersion)
	if err != nil {
		t.Fatal(err)
	}
	want, err := cloudint.Manifest(cloudint.Params{ClusterName: name, KubernetesVersion: release})
	if err != nil {
		t.Fatal(err)
	}
	if string(applied) != string(want) {
		t.Error("the manifest applied on cp-0 is not cloudint's for the cluster")
	}
	for _, s := range []string{"--cluster-name=" + name, "--k8s-tag-cluster-id=" + name, "kind: StorageClass"} {
		if !strings.Contains(string(applied), s) {
			t.Errorf("the applied manifest lacks %q", s)
		}
	}
	ready := h.fleet.CallsOf("nodes-ready")
	if len(ready) != 1 || !strings.Contains(string(ready[0].Stdin), "node.cloudprovider.kubernetes.io/uninitialized") {
		t.Error("nodes-ready does not wait for the cloud controller to initialise the nodes")
	}

	// The control planes' role allows exactly the documented actions; the
	// workers' role has no inline policy (nothing on a worker calls AWS).
	ctx := context.Background()
	im := iam.NewFromConfig(h.cfg)
	cpRole, wpRole := "kforge-"+name+"-ha-cp", "kforge-"+name+"-ha-wp"
	if got, want := inlineActions(t, im, cpRole), cloudint.ControlPlaneActions(); !slices.Equal(got, want) {
		t.Errorf("role %s allows %v,\nwant exactly %v", cpRole, got, want)
	}
	if got := inlinePolicies(t, im, wpRole); len(got) != 0 {
		t.Errorf("role %s has inline policies %v, want none", wpRole, got)
	}

	// A workers' role that still has the cloud controller's node policy
	// (as kforge once gave it) and a control planes' policy changed
	// outside kforge are drift: diff names both, and the same create
	// removes the one and puts the other back.
	for role, doc := range map[string]string{wpRole: formerNodePolicy, cpRole: `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"ec2:DescribeRegions","Resource":"*"}]}`} {
		if _, err := im.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String("kforge"), PolicyDocument: aws.String(doc)}); err != nil {
			t.Fatal(err)
		}
	}
	d := h.diff(t, name, region, 1)
	for step, detail := range map[string]string{"role/wp": "inline policy kforge it should not have", "role/cp": "inline policy kforge was changed"} {
		if _, got, ok := d.change(step); !ok || !strings.Contains(got, detail) {
			t.Errorf("diff does not name %s with %q: %+v", step, detail, d.Changes)
		}
	}
	h.MustRun(t, create...)
	h.diff(t, name, region, 0)
	if got := inlinePolicies(t, im, wpRole); len(got) != 0 {
		t.Errorf("after the repair, role %s has inline policies %v, want none", wpRole, got)
	}
	if got, want := inlineActions(t, im, cpRole), cloudint.ControlPlaneActions(); !slices.Equal(got, want) {
		t.Errorf("after the repair, role %s allows %v,\nwant exactly %v", cpRole, got, want)
	}

	// Subnets are where the cloud controller puts load balancers.
	subnets, err := ec2.NewFromConfig(h.cfg).DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []ec2types.Filter{
		{Name: aws.String("tag:kforge.io/cluster"), Values: []string{name}}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(subnets.Subnets) == 0 {
		t.Fatal("the cluster has no subnets")
	}
	for _, sn := range subnets.Subnets {
		tags := tagMap(sn.Tags)
		if tags["kubernetes.io/role/elb"] != "1" || tags["kubernetes.io/cluster/"+name] != "owned" {
			t.Errorf("subnet %s tags %v: want kubernetes.io/role/elb=1 and kubernetes.io/cluster/%s=owned", aws.ToString(sn.SubnetId), tags, name)
		}
	}

	// What the cloud controller and the CSI driver make goes with the
	// cluster.
	vpc, ids := clusterNetwork(t, h.Env, "ha-aws", name, region)
	seedLeftovers(t, h.cfg, name, vpc, ids)
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
	leftoversGone(t, h.cfg, name)
}

// TestHANoCloudIntegration: --no-cloud-integration gives the bare
// cluster with either bootstrap: nodes keep kforge's names (the VMs'),
// kubelets are told of no cloud provider (k3s keeps its own cloud
// controller), nothing is applied, and the roles carry no policy. The two
// clusters are made one after the other in the test's region: the SSH
// fleet finds VMs by address in its region, the emulator numbers the
// addresses of each subnet from its start (two clusters at once would get
// the same ones), and every region it enables without opt-in is already
// another fleet test's.
func TestHANoCloudIntegration(t *testing.T) {
	t.Parallel()
	const region = "ca-central-1"
	h := newHAEnv(t, region)
	small := []string{"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump()}

	t.Run("k3s", func(t *testing.T) {
		const name = "bare"
		h.MustRun(t, append([]string{"create", "ha-aws", "--name", name, "--region", region, "--no-cloud-integration"}, small...)...)
		if n := len(h.fleet.CallsOf("cloud-integration")); n != 0 {
			t.Errorf("cloud-integration ran %d times with --no-cloud-integration", n)
		}
		for _, c := range append(h.fleet.CallsOf("k3s-server"), h.fleet.CallsOf("k3s-agent")...) {
			cfg := k3sConfigOf(t, c)
			if cfg["node-name"] != c.VM.Name {
				t.Errorf("%s: k3s node-name %v, want the VM's name", c.VM.Name, cfg["node-name"])
			}
			for _, k := range []string{"disable-cloud-controller", "kubelet-arg", "disable"} {
				if _, ok := cfg[k]; ok {
					t.Errorf("%s: k3s configuration sets %s without the cloud integration", c.VM.Name, k)
				}
			}
		}
		noInlinePolicies(t, h.cfg, name)
		// The setting is the cluster's: a create without it is refused.
		r := h.Run(t, append([]string{"create", "ha-aws", "--name", name, "--region", region}, small...)...)
		if r.Code != 2 || !strings.Contains(r.Stderr, "--no-cloud-integration") {
			t.Errorf("a create without --no-cloud-integration: exit %d, stderr %s", r.Code, r.Stderr)
		}
		h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
		awscheck.Empty(t, h.cfg, "ha-aws", name)
	})

	t.Run("kubeadm", func(t *testing.T) {
		const name = "bare-kubeadm"
		h.MustRun(t, append([]string{"create", "ha-aws", "--name", name, "--region", region, "--bootstrap", "kubeadm", "--no-cloud-integration"}, small...)...)
		if n := len(h.fleet.CallsOf("cloud-integration")); n != 0 {
			t.Errorf("cloud-integration ran %d times with --no-cloud-integration", n)
		}
		// Every node's kubeadm init or join: registered under its VM's
		// name, with no kubelet argument and nothing anywhere in what it
		// ran or wrote about a cloud provider or a provider ID.
		joined := map[string]bool{}
		for _, recipe := range []string{"kubeadm-init", "kubeadm-join-cp", "kubeadm-join-worker"} {
			for _, c := range h.fleet.CallsOf(recipe) {
				reg := nodeRegistrationOf(t, c)
				joined[c.VM.Name] = true
				if reg.Name != c.VM.Name {
					t.Errorf("%s: %s registers node %q, want the VM's name", c.VM.Name, recipe, reg.Name)
				}
				// Only the node's address (node-ip).
				if a := reg.KubeletExtraArgs; len(a) != 1 || a[0].Name != "node-ip" || a[0].Value != c.VM.PrivateIP {
					t.Errorf("%s: %s gives the kubelet %v, want only node-ip=%s", c.VM.Name, recipe, a, c.VM.PrivateIP)
				}
				text := strings.ToLower(c.Text())
				for _, s := range []string{"cloud-provider", "provider-id", "providerid"} {
					if strings.Contains(text, s) {
						t.Errorf("%s: %s mentions %s without the cloud integration", c.VM.Name, recipe, s)
					}
				}
			}
		}
		if want := []string{name + "-cp-0", name + "-wp-0"}; len(joined) != len(want) || !joined[want[0]] || !joined[want[1]] {
			t.Errorf("kubeadm ran on %v, want %v", joined, want)
		}
		var ready []sshfleet.Call // this cluster's (the k3s one's ran before)
		for _, c := range h.fleet.CallsOf("nodes-ready") {
			if strings.HasPrefix(c.VM.Name, name+"-") {
				ready = append(ready, c)
			}
		}
		if len(ready) != 1 || strings.Contains(string(ready[0].Stdin), bootstrap.UninitializedTaint) {
			t.Errorf("nodes-ready ran %d times, or waits for the cloud controller that is not there", len(ready))
		}
		noInlinePolicies(t, h.cfg, name)
		h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
		awscheck.Empty(t, h.cfg, "ha-aws", name)
	})
}

// noInlinePolicies checks that neither the control planes' nor the
// workers' role of a cluster has an inline policy.
func noInlinePolicies(t *testing.T, cfg aws.Config, name string) {
	t.Helper()
	im := iam.NewFromConfig(cfg)
	for _, role := range []string{"kforge-" + name + "-ha-cp", "kforge-" + name + "-ha-wp"} {
		if got := inlinePolicies(t, im, role); len(got) != 0 {
			t.Errorf("role %s has inline policies %v without the cloud integration", role, got)
		}
	}
}

// TestHAK3sCloudIntegration: k3s nodes with the cloud integration run
// without k3s's cloud controller, ServiceLB and local-path storage, with
// an external cloud provider, named by their private DNS names.
func TestHAK3sCloudIntegration(t *testing.T) {
	t.Parallel()
	const name, region = "k3scloud", "eu-north-1"
	h := newHAEnv(t, region)
	h.MustRun(t, "create", "ha-aws", "--name", name, "--region", region,
		"--control-planes", "1", "--workers", "1", "--etcd", "1", "--ssh-cidr", "10.0.0.0/8", "--ssh-jump", h.jump())
	dns := map[string]string{}
	for _, l := range instances(t, h.cfg, name) {
		for _, in := range l {
			dns[tagMap(in.Tags)["Name"]] = aws.ToString(in.PrivateDnsName)
		}
	}
	k3s := append(h.fleet.CallsOf("k3s-server"), h.fleet.CallsOf("k3s-agent")...)
	if len(k3s) != 2 {
		t.Fatalf("%d k3s installs, want 2", len(k3s))
	}
	for _, c := range k3s {
		cfg := k3sConfigOf(t, c)
		if cfg["node-name"] != dns[c.VM.Name] || dns[c.VM.Name] == "" {
			t.Errorf("%s: node-name %v, want %q", c.VM.Name, cfg["node-name"], dns[c.VM.Name])
		}
		args, _ := json.Marshal(cfg["kubelet-arg"])
		if !strings.Contains(string(args), "cloud-provider=external") || !strings.Contains(string(args), "provider-id=aws:///") {
			t.Errorf("%s: kubelet-arg %s", c.VM.Name, args)
		}
		if c.Recipe == "k3s-server" {
			disabled, _ := json.Marshal(cfg["disable"])
			if cfg["disable-cloud-controller"] != true || !strings.Contains(string(disabled), "servicelb") || !strings.Contains(string(disabled), "local-storage") {
				t.Errorf("%s: disable-cloud-controller %v, disable %s", c.VM.Name, cfg["disable-cloud-controller"], disabled)
			}
		}
	}
	if clouds := h.fleet.CallsOf("cloud-integration"); len(clouds) != 1 || !strings.Contains(string(clouds[0].Stdin), "/etc/rancher/k3s/k3s.yaml") {
		t.Errorf("cloud-integration ran %d times (want once, with k3s's kubeconfig)", len(clouds))
	}
	h.MustRun(t, "delete", "ha-aws", "--name", name, "--region", region, "--yes")
	awscheck.Empty(t, h.cfg, "ha-aws", name)
}

// kubeadmNodeRegistration is the part of a kubeadm configuration the
// cloud integration sets.
type kubeadmNodeRegistration struct {
	Name             string `json:"name"`
	KubeletExtraArgs []struct {
		Name  string `json:"name"`
		Value string `json:"value"`
	} `json:"kubeletExtraArgs"`
}

// nodeRegistrationOf reads the nodeRegistration of the kubeadm
// configuration a recorded init or join wrote.
func nodeRegistrationOf(t *testing.T, c sshfleet.Call) kubeadmNodeRegistration {
	t.Helper()
	for path, content := range c.Files() {
		if !strings.HasSuffix(path, ".yaml") {
			continue
		}
		for _, doc := range strings.Split(string(content), "\n---\n") {
			if !strings.Contains(doc, "kind: InitConfiguration") && !strings.Contains(doc, "kind: JoinConfiguration") {
				continue
			}
			var cfg struct {
				NodeRegistration kubeadmNodeRegistration `json:"nodeRegistration"`
			}
			if err := yaml.Unmarshal([]byte(doc), &cfg); err != nil {
				t.Fatal(err)
			}
			return cfg.NodeRegistration
		}
	}
	t.Fatalf("%s on %s wrote no kubeadm configuration", c.Recipe, c.VM.Name)
	return kubeadmNodeRegistration{}
}

// k3sConfigOf reads the /etc/rancher/k3s/config.yaml a k3s install wrote.
func k3sConfigOf(t *testing.T, c sshfleet.Call) map[string]any {
	t.Helper()
	b, ok := c.Files()["/etc/rancher/k3s/config.yaml"]
	if !ok {
		t.Fatalf("%s on %s wrote no k3s configuration", c.Recipe, c.VM.Name)
	}
	var cfg map[string]any
	if err := yaml.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// heredocAfter decodes the base64 here-document that follows the line
// starting with prefix in a script.
func heredocAfter(t *testing.T, script, prefix string) []byte {
	t.Helper()
	i := strings.Index(script, prefix)
	if i < 0 {
		t.Fatalf("the script has no %q", prefix)
	}
	rest := script[i:]
	rest = rest[strings.Index(rest, "\n")+1:]
	end := strings.Index(rest, "\nKFORGE_EOF")
	if end < 0 {
		t.Fatal("unterminated here-document")
	}
	b, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(rest[:end], "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// formerNodePolicy is the inline policy kforge once gave the workers' role
// of an ha-aws cluster: the cloud controller manager's documented "Node
// Policy", which nothing on a worker uses.
const formerNodePolicy = `{"Version":"2012-10-17","Statement":[{"Sid":"CloudControllerManagerNode","Effect":"Allow",` +
	`"Action":["ec2:DescribeInstances","ec2:DescribeRegions","ecr:GetAuthorizationToken","ecr:BatchCheckLayerAvailability",` +
	`"ecr:GetDownloadUrlForLayer","ecr:GetRepositoryPolicy","ecr:DescribeRepositories","ecr:ListImages","ecr:BatchGetImage"],"Resource":["*"]}]}`

// inlinePolicies returns the names of a role's inline policies, read from
// the emulator.
func inlinePolicies(t *testing.T, im *iam.Client, role string) []string {
	t.Helper()
	out, err := im.ListRolePolicies(context.Background(), &iam.ListRolePoliciesInput{RoleName: aws.String(role)})
	if err != nil {
		t.Fatalf("role %s: %v", role, err)
	}
	return out.PolicyNames
}

// inlineActions returns the sorted actions of a role's inline policy
// "kforge", read from the emulator.
func inlineActions(t *testing.T, im *iam.Client, role string) []string {
	t.Helper()
	out, err := im.GetRolePolicy(context.Background(), &iam.GetRolePolicyInput{RoleName: aws.String(role), PolicyName: aws.String("kforge")})
	if err != nil {
		t.Fatalf("role %s: %v", role, err)
	}
	doc, err := url.QueryUnescape(aws.ToString(out.PolicyDocument))
	if err != nil {
		doc = aws.ToString(out.PolicyDocument)
	}
	var p struct {
		Statement []struct {
			Action json.RawMessage
		}
	}
	if err := json.Unmarshal([]byte(doc), &p); err != nil {
		t.Fatalf("role %s policy: %v\n%s", role, err, doc)
	}
	set := map[string]bool{}
	for _, s := range p.Statement {
		var many []string
		if json.Unmarshal(s.Action, &many) != nil {
			var one string
			if err := json.Unmarshal(s.Action, &one); err != nil {
				t.Fatalf("role %s: action %s", role, s.Action)
			}
			many = []string{one}
		}
		for _, a := range many {
			set[a] = true
		}
	}
	var got []string
	for a := range set {
		got = append(got, a)
	}
	sort.Strings(got)
	return got
}
