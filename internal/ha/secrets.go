package ha

import (
	"context"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/kforge/kforge/internal/bootstrap"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/pki"
	"github.com/kforge/kforge/internal/spec"
	"github.com/kforge/kforge/internal/sshx"
)

// Keys of the secrets kept in state.
const (
	secretSSHKey   = "ssh-key"          // the cluster's ed25519 login key (OpenSSH PEM)
	secretHostSeed = "host-key-seed"    // 32 bytes from which each VM's host key derives
	secretToken    = "join-token"       // k3s token, or kubeadm bootstrap token
	secretCertKey  = "certificate-key"  // kubeadm --certificate-key
	secretEtcdCA   = "etcd-ca"          // PEM pair (JSON)
	secretK8sCA    = "kubernetes-ca"    // PEM pair (JSON), kubeadm
	secretAdmin    = "admin-kubeconfig" // from the first control plane
)

// secretsOut is the public part of what the secrets step made.
type secretsOut struct {
	SSHPublicKey string `json:"sshPublicKey"`
	// CAHash is the kubeadm discovery hash of the Kubernetes CA.
	CAHash string `json:"caHash,omitempty"`
}

// secretsStep makes the cluster's keys, tokens and CAs once, keeping them
// in state. It makes no AWS call.
func (p *Provider) secretsStep(s spec.Spec) *engine.Step {
	return &engine.Step{
		ID:    StepSecrets,
		Title: "SSH key, host-key seed, join token and certificate authorities (kept in state)",
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			gen := map[string]func() ([]byte, error){
				secretSSHKey: func() ([]byte, error) {
					k, err := sshx.GenerateKey("kforge-" + s.Name)
					return k.PrivatePEM, err
				},
				secretHostSeed: func() ([]byte, error) {
					b := make([]byte, 32)
					_, err := rand.Read(b)
					return b, err
				},
				secretEtcdCA: func() ([]byte, error) { return newCA("kforge-" + s.Name + "-etcd-ca") },
			}
			switch s.Bootstrap {
			case spec.BootstrapKubeadm:
				gen[secretToken] = str(bootstrap.NewBootstrapToken)
				gen[secretCertKey] = str(bootstrap.NewCertificateKey)
				gen[secretK8sCA] = func() ([]byte, error) { return newCA("kubernetes") }
			default:
				gen[secretToken] = str(bootstrap.NewK3sToken)
			}
			for _, key := range sortedKeys(gen) {
				if _, ok := r.Secret(key); ok {
					continue
				}
				v, err := gen[key]()
				if err != nil {
					return nil, fmt.Errorf("generate %s: %w", key, err)
				}
				if err := r.SetSecret(ctx, key, v); err != nil {
					return nil, err
				}
			}
			signer, err := clusterSigner(r)
			if err != nil {
				return nil, err
			}
			out := secretsOut{SSHPublicKey: sshx.AuthorizedKey(signer.PublicKey(), "kforge-"+s.Name)}
			if s.Bootstrap == spec.BootstrapKubeadm {
				ca, err := caFrom(r, secretK8sCA)
				if err != nil {
					return nil, err
				}
				out.CAHash = pki.SPKIHash(ca.Cert)
			}
			return out, nil
		},
	}
}

func str(f func() (string, error)) func() ([]byte, error) {
	return func() ([]byte, error) {
		s, err := f()
		return []byte(s), err
	}
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func newCA(cn string) ([]byte, error) {
	ca, err := pki.NewCA(cn)
	if err != nil {
		return nil, err
	}
	pp, err := ca.PEM()
	if err != nil {
		return nil, err
	}
	return json.Marshal(pp)
}

// secretGetter reads secrets kept in state.
type secretGetter interface {
	Secret(key string) ([]byte, bool)
}

func secret(r secretGetter, key string) ([]byte, error) {
	v, ok := r.Secret(key)
	if !ok {
		return nil, fmt.Errorf("secret %s is missing from the state: the secrets step did not run", key)
	}
	return v, nil
}

func caFrom(r secretGetter, key string) (*pki.KeyPair, error) {
	b, err := secret(r, key)
	if err != nil {
		return nil, err
	}
	var pp pki.PEMPair
	if err := json.Unmarshal(b, &pp); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return pki.ParseKeyPair(pp)
}

func clusterSigner(r secretGetter) (ssh.Signer, error) {
	b, err := secret(r, secretSSHKey)
	if err != nil {
		return nil, err
	}
	return sshx.ParsePrivateKey(b)
}

// hostKey derives the SSH host key of a VM from the cluster's seed: the
// same VM slot always gets the same key, so a relaunch after a crash (same
// ClientToken, same user-data) and the SSH pin agree without storing a key
// per VM.
func hostKey(r secretGetter, slot string) (ed25519.PrivateKey, error) {
	seed, err := secret(r, secretHostSeed)
	if err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, seed, nil, "kforge host key "+slot, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(k), nil
}

// hostPublicKey is the SSH public key of a VM's host key.
func hostPublicKey(r secretGetter, slot string) (ssh.PublicKey, error) {
	k, err := hostKey(r, slot)
	if err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(k.Public())
}
