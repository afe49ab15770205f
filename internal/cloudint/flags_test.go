package cloudint

import (
	"fmt"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// documentedFlags are, per component, the command-line flags its pinned
// release documents (a subset is enough: every flag the manifest passes
// must be here). Each list names where it was read; UPSTREAM.md has the
// versions.
var documentedFlags = map[string][]string{
	// aws-cloud-controller-manager v1.32.8 / v1.33.4 / v1.34.4: its own
	// flags are those of k8s.io/cloud-provider's options
	// (k8s.io/cloud-provider@v0.34.0 options/options.go Flags,
	// options/kubecloudshared.go, options/cloudprovider.go,
	// options/nodecontroller.go, options/servicecontroller.go), of
	// k8s.io/controller-manager@v0.34.0 options/generic.go (with
	// component-base's config/options/leaderelectionconfig.go), the
	// logging flags of component-base logs/api/v1 (app/controllermanager.go
	// adds them to the global flag set), and the tagging controller's
	// (cloud-provider-aws pkg/controllers/options). Its docs
	// (docs/getting_started.md, examples/existing-cluster/base/
	// aws-cloud-controller-manager-daemonset.yaml) use --cloud-provider,
	// --v, --use-service-account-credentials and --configure-cloud-routes.
	"aws-cloud-controller-manager": {
		"--cloud-provider", "--cloud-config", "--cluster-name", "--cluster-cidr",
		"--allocate-node-cidrs", "--cidr-allocator-type", "--configure-cloud-routes",
		"--use-service-account-credentials", "--allow-untagged-cloud",
		"--route-reconciliation-period", "--node-monitor-period", "--node-sync-period",
		"--concurrent-node-syncs", "--concurrent-service-syncs", "--external-cloud-volume-plugin",
		"--node-status-update-frequency", "--master", "--kubeconfig",
		"--controllers", "--min-resync-period", "--kube-api-content-type", "--kube-api-qps",
		"--kube-api-burst", "--controller-start-interval",
		"--leader-elect", "--leader-elect-lease-duration", "--leader-elect-renew-deadline",
		"--leader-elect-retry-period", "--leader-elect-resource-lock",
		"--leader-elect-resource-name", "--leader-elect-resource-namespace",
		"--bind-address", "--secure-port", "--cert-dir", "--tls-cert-file", "--tls-private-key-file",
		"--authentication-kubeconfig", "--authorization-kubeconfig",
		"--feature-gates", "--v", "--vmodule", "--logging-format",
	},
	// aws-ebs-csi-driver v1.63.1, controller mode: docs/options.md and
	// pkg/driver/options.go (AddFlags, flags of the controller mode), plus
	// the logging flags cmd/main.go adds (logsapi.AddFlags).
	"ebs-plugin controller": {
		"--endpoint", "--http-endpoint", "--metrics-cert-file", "--metrics-key-file",
		"--kubeconfig", "--enable-otel-tracing", "--metadata-sources",
		"--user-agent-extra", "--aws-sdk-debug-log",
		"--extra-tags", "--k8s-tag-cluster-id", "--warn-on-invalid-tag", "--batching",
		"--modify-volume-request-handler-timeout", "--enable-node-local-volumes",
		"--logging-format", "--v", "--vmodule", "--version",
	},
	// aws-ebs-csi-driver v1.63.1, node mode: the same files, flags of the
	// node mode.
	"ebs-plugin node": {
		"--endpoint", "--http-endpoint", "--metrics-cert-file", "--metrics-key-file",
		"--kubeconfig", "--enable-otel-tracing", "--metadata-sources",
		"--volume-attach-limit", "--reserved-volume-attachments", "--legacy-xfs",
		"--csi-mount-point-prefix",
		"--logging-format", "--v", "--vmodule", "--version",
	},
	// kubernetes-csi/external-provisioner v6.3.0: README.md "Command line
	// options" and cmd/csi-provisioner/csi-provisioner.go (which also
	// registers --default-fstype and the logsapi flags).
	"csi-provisioner": {
		"--csi-address", "--timeout", "--v", "--feature-gates", "--extra-create-metadata",
		"--leader-election", "--leader-election-namespace", "--leader-election-lease-duration",
		"--leader-election-renew-deadline", "--leader-election-retry-period",
		"--default-fstype", "--kube-api-qps", "--kube-api-burst", "--worker-threads",
		"--retry-interval-start", "--retry-interval-max", "--strict-topology",
		"--immediate-topology", "--volume-name-prefix", "--volume-name-uuid-length",
		"--http-endpoint", "--metrics-address", "--metrics-path", "--kubeconfig",
	},
	// kubernetes-csi/external-attacher v4.12.0: README.md "Command line
	// options" and cmd/csi-attacher/main.go.
	"csi-attacher": {
		"--csi-address", "--timeout", "--v", "--leader-election", "--leader-election-namespace",
		"--leader-election-lease-duration", "--leader-election-renew-deadline",
		"--leader-election-retry-period", "--kube-api-qps", "--kube-api-burst",
		"--worker-threads", "--retry-interval-start", "--retry-interval-max",
		"--default-fstype", "--feature-gates", "--http-endpoint", "--metrics-address",
		"--metrics-path", "--kubeconfig", "--resync", "--reconcile-sync",
	},
	// kubernetes-csi/external-resizer v2.2.1: README.md "Command line
	// options" and cmd/csi-resizer/main.go.
	"csi-resizer": {
		"--csi-address", "--timeout", "--v", "--leader-election", "--leader-election-namespace",
		"--leader-election-lease-duration", "--leader-election-renew-deadline",
		"--leader-election-retry-period", "--handle-volume-inuse-error", "--workers",
		"--retry-interval-start", "--retry-interval-max", "--extra-modify-metadata",
		"--feature-gates", "--http-endpoint", "--metrics-address", "--metrics-path", "--kubeconfig",
	},
	// kubernetes-csi/livenessprobe v2.19.0: README.md and
	// cmd/livenessprobe/main.go.
	"liveness-probe": {
		"--csi-address", "--probe-timeout", "--health-port", "--http-endpoint",
		"--metrics-address", "--metrics-path", "--v", "--logging-format",
	},
	// kubernetes-csi/node-driver-registrar v2.17.0: README.md and
	// cmd/csi-node-driver-registrar/main.go.
	"node-driver-registrar": {
		"--csi-address", "--kubelet-registration-path", "--http-endpoint", "--health-port",
		"--timeout", "--mode", "--enable-pprof", "--v", "--plugin-registration-path",
	},
}

// componentOf names the component a container runs: the driver by its
// mode (its first argument), the others by the container name.
func componentOf(c corev1.Container) string {
	if c.Name == "ebs-plugin" && len(c.Args) > 0 {
		return "ebs-plugin " + c.Args[0]
	}
	return c.Name
}

// checkFlags reports the first argument of a component that is not one of
// its documented flags. Only the driver takes a positional argument, its
// mode, first.
func checkFlags(component string, args []string) error {
	known, ok := documentedFlags[component]
	if !ok {
		return fmt.Errorf("no documented flags for component %q", component)
	}
	for i, arg := range args {
		if i == 0 && strings.HasPrefix(component, "ebs-plugin ") && arg == strings.TrimPrefix(component, "ebs-plugin ") {
			continue
		}
		if !strings.HasPrefix(arg, "--") {
			return fmt.Errorf("%s: argument %q is not a flag", component, arg)
		}
		name, _, _ := strings.Cut(arg, "=")
		found := false
		for _, k := range known {
			if k == name {
				found = true
				break
			}
		}
		if !found {
			return fmt.Errorf("%s: flag %s is not documented", component, name)
		}
	}
	return nil
}

// TestFlagsAreDocumented checks every argument of every container against
// its component's documented flags.
func TestFlagsAreDocumented(t *testing.T) {
	objs := decodeManifest(t, testParams)
	var containers []corev1.Container
	for _, o := range objs {
		switch o := o.(type) {
		case *appsv1.DaemonSet:
			containers = append(containers, o.Spec.Template.Spec.Containers...)
		case *appsv1.Deployment:
			containers = append(containers, o.Spec.Template.Spec.Containers...)
		}
	}
	if len(containers) != 9 {
		t.Fatalf("%d containers, want 9 (1 CCM, 5 controller, 3 node)", len(containers))
	}
	for _, c := range containers {
		if err := checkFlags(componentOf(c), c.Args); err != nil {
			t.Errorf("container %s: %v", c.Name, err)
		}
		if len(c.Command) != 0 {
			t.Errorf("container %s overrides its command %v; the flags are checked against the image's own entrypoint", c.Name, c.Command)
		}
	}

	t.Run("rejects an undocumented flag", func(t *testing.T) {
		for component := range documentedFlags {
			for _, args := range [][]string{{"--no-such-flag"}, {"--no-such-flag=1"}, {"--v=2", "--no-such-flag=true"}} {
				if err := checkFlags(component, args); err == nil {
					t.Errorf("%s: %v accepted", component, args)
				}
			}
		}
		if err := checkFlags("ebs-plugin controller", []string{"node"}); err == nil {
			t.Errorf("the controller accepted the node mode")
		}
		if err := checkFlags("ebs-plugin node", []string{"node", "--k8s-tag-cluster-id=x"}); err == nil {
			t.Errorf("node mode accepted a controller-only flag")
		}
		if err := checkFlags("no-such-component", nil); err == nil {
			t.Errorf("an unknown component was accepted")
		}
	})
}
