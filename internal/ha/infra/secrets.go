package infra

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
	secretSSHKey   = "ssh-key"       // the cluster's ed25519 login key (OpenSSH PEM)
	secretHostSeed = "host-key-seed" // 32 bytes from which each VM's host key derives
	// SecretToken is the k3s token, or the kubeadm bootstrap token.
	SecretToken = "join-token"
	// SecretCertKey is kubeadm's --certificate-key.
	SecretCertKey = "certificate-key"
	// SecretEtcdCA and SecretK8sCA are PEM pairs (JSON) of the etcd CA and
	// of the Kubernetes CA (kubeadm).
	SecretEtcdCA = "etcd-ca"
	SecretK8sCA  = "kubernetes-ca"
	// SecretAdmin is the admin kubeconfig, read from a control plane.
	SecretAdmin = "admin-kubeconfig"
)

// Secrets is the public part of what the secrets step made.
type Secrets struct {
	SSHPublicKey string `json:"sshPublicKey"`
	// CAHash is the kubeadm discovery hash of the Kubernetes CA.
	CAHash string `json:"caHash,omitempty"`
}

// addSecrets makes the cluster's keys, tokens and CAs once, keeping them
// in state. It makes no AWS call.
func addSecrets(g *engine.Graph, s spec.Spec) engine.Ref[Secrets] {
	return engine.AddAction(g, engine.Action[Secrets]{
		ID:    StepSecrets,
		Title: "SSH key, host-key seed, join token and certificate authorities (kept in state)",
		Do: func(ctx context.Context, r *engine.Run) (Secrets, error) {
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
				SecretEtcdCA: func() ([]byte, error) { return newCA("kforge-" + s.Name + "-etcd-ca") },
			}
			switch s.Bootstrap {
			case spec.BootstrapKubeadm:
				gen[SecretToken] = str(bootstrap.NewBootstrapToken)
				gen[SecretCertKey] = str(bootstrap.NewCertificateKey)
				gen[SecretK8sCA] = func() ([]byte, error) { return newCA("kubernetes") }
			default:
				gen[SecretToken] = str(bootstrap.NewK3sToken)
			}
			for _, key := range sortedKeys(gen) {
				if _, ok := r.Secret(key); ok {
					continue
				}
				v, err := gen[key]()
				if err != nil {
					return Secrets{}, fmt.Errorf("generate %s: %w", key, err)
				}
				if err := r.SetSecret(ctx, key, v); err != nil {
					return Secrets{}, err
				}
			}
			signer, err := ClusterSigner(r)
			if err != nil {
				return Secrets{}, err
			}
			out := Secrets{SSHPublicKey: sshx.AuthorizedKey(signer.PublicKey(), "kforge-"+s.Name)}
			if s.Bootstrap == spec.BootstrapKubeadm {
				ca, err := CA(r, SecretK8sCA)
				if err != nil {
					return Secrets{}, err
				}
				out.CAHash = pki.SPKIHash(ca.Cert)
			}
			return out, nil
		},
	})
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

// SecretGetter reads secrets kept in state (an engine.Run, a state.Cluster
// through a small adapter).
type SecretGetter interface {
	Secret(key string) ([]byte, bool)
}

// Secret returns a secret kept in state.
func Secret(r SecretGetter, key string) ([]byte, error) {
	v, ok := r.Secret(key)
	if !ok {
		return nil, fmt.Errorf("secret %s is missing from the state: the secrets step did not run", key)
	}
	return v, nil
}

// CA returns a certificate authority kept in state.
func CA(r SecretGetter, key string) (*pki.KeyPair, error) {
	b, err := Secret(r, key)
	if err != nil {
		return nil, err
	}
	var pp pki.PEMPair
	if err := json.Unmarshal(b, &pp); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return pki.ParseKeyPair(pp)
}

// ClusterSigner is the cluster's SSH login key.
func ClusterSigner(r SecretGetter) (ssh.Signer, error) {
	b, err := Secret(r, secretSSHKey)
	if err != nil {
		return nil, err
	}
	return sshx.ParsePrivateKey(b)
}

// hostKey derives the SSH host key of a VM from the cluster's seed: the
// same VM slot always gets the same key, so a relaunch after a crash (same
// ClientToken, same user-data) and the SSH pin agree without storing a key
// per VM.
func hostKey(r SecretGetter, slot string) (ed25519.PrivateKey, error) {
	seed, err := Secret(r, secretHostSeed)
	if err != nil {
		return nil, err
	}
	k, err := hkdf.Key(sha256.New, seed, nil, "kforge host key "+slot, ed25519.SeedSize)
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(k), nil
}

// HostPublicKey is the SSH public key of the host key of the VM in a slot.
func HostPublicKey(r SecretGetter, slot string) (ssh.PublicKey, error) {
	k, err := hostKey(r, slot)
	if err != nil {
		return nil, err
	}
	return ssh.NewPublicKey(k.Public())
}
