package bootstrap

import (
	"errors"
	"fmt"
	"time"
)

// RecipeCloudIntegration applies the AWS cloud integration of a cluster
// (the cloud controller manager and the EBS CSI driver).
const RecipeCloudIntegration = "cloud-integration"

// CloudControllerDaemonSet is the DaemonSet (in kube-system) that runs the
// AWS cloud controller manager on the control planes; the recipe waits for
// it to roll out.
const CloudControllerDaemonSet = "aws-cloud-controller-manager"

// DefaultCloudIntegrationTimeout bounds the wait for the cloud controller
// manager to run on the control planes present.
const DefaultCloudIntegrationTimeout = 5 * time.Minute

// CloudIntegrationParams configures cloud-integration.
type CloudIntegrationParams struct {
	// Kubeconfig is the admin kubeconfig on the control plane.
	Kubeconfig string
	// Manifest holds the objects to apply (package cloudint builds them
	// from the Kubernetes API types).
	Manifest []byte
	// Timeout bounds the wait for the cloud controller manager (default
	// DefaultCloudIntegrationTimeout).
	Timeout time.Duration
}

const cloudBody = `
main() {
	local kubeconfig={{q .Kubeconfig}}
	base64 -d <<'` + heredocEnd + `' | kubectl --kubeconfig "$kubeconfig" --request-timeout=60s apply -f - >&2
{{b64 .Manifest}}
` + heredocEnd + `
	if ! kubectl --kubeconfig "$kubeconfig" -n kube-system rollout status daemonset/` + CloudControllerDaemonSet + ` --timeout={{seconds .Timeout}}s >&2; then
		kubectl --kubeconfig "$kubeconfig" --request-timeout=15s -n kube-system get pods -o wide >&2 || true
		kforge_fail "the AWS cloud controller manager did not run on the control planes within {{seconds .Timeout}}s"
	fi
	echo "cloud integration applied"
}
`

// RenderCloudIntegration renders cloud-integration: it applies the
// manifest with kubectl on a control plane and waits (bounded) for the
// cloud controller manager to run there. The EBS CSI driver is not waited
// for: its pods start once the cloud controller has initialised the nodes,
// which nodes-ready waits for.
func RenderCloudIntegration(p CloudIntegrationParams) (string, error) {
	if err := validKubeconfigPath(p.Kubeconfig); err != nil {
		return "", fmt.Errorf("cloud-integration recipe: %w", err)
	}
	if len(p.Manifest) == 0 {
		return "", errors.New("cloud-integration recipe: no manifest")
	}
	if p.Timeout < 0 {
		return "", errors.New("cloud-integration recipe: the timeout must not be negative")
	}
	p.Timeout = orDefault(p.Timeout, DefaultCloudIntegrationTimeout)
	return renderScript(RecipeCloudIntegration, cloudBody, p)
}
