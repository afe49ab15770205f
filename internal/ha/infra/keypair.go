package infra

import (
	"context"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/awsx"
	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// KeyPairName is the EC2 key pair of a cluster: kforge-<name>.
func KeyPairName(cluster string) string { return "kforge-" + cluster }

// KeyPair is the output of the key pair step.
type KeyPair struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

func ec2Owner(tags []ec2types.Tag) spec.Ref {
	return spec.Ref{Type: awsx.EC2TagValue(tags, awsx.TagType), Name: awsx.EC2TagValue(tags, awsx.TagCluster), Region: awsx.EC2TagValue(tags, awsx.TagRegion)}
}

func findKeyPair(ctx context.Context, c *ec2.Client, name string) (*ec2types.KeyPairInfo, error) {
	// A filter, not KeyNames: an absent key is an empty answer, not an
	// error.
	out, err := c.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{
		Filters:          []ec2types.Filter{{Name: aws.String("key-name"), Values: []string{name}}},
		IncludePublicKey: aws.Bool(true),
	})
	if err != nil {
		return nil, fmt.Errorf("look up key pair %s: %w", name, err)
	}
	if len(out.KeyPairs) == 0 {
		return nil, nil
	}
	return &out.KeyPairs[0], nil
}

// CheckKeyPair refuses a cluster whose key pair name belongs to someone
// else (a *spec.UsageError).
func CheckKeyPair(ctx context.Context, c *Clients, ref spec.Ref) error {
	kp, err := findKeyPair(ctx, c.EC2, KeyPairName(ref.Name))
	if err != nil || kp == nil {
		return err
	}
	if o := ec2Owner(kp.Tags); o != ref {
		return spec.Usagef("EC2 key pair %s already exists in %s and is not kforge's for this cluster: pick another cluster name", KeyPairName(ref.Name), ref.Region)
	}
	return nil
}

// addKeyPair imports the cluster's public key as its EC2 key pair. Found
// again on every run: deleted outside kforge, it is imported again; holding
// another key, it is replaced; another cluster's, the run stops.
func addKeyPair(g *engine.Graph, c *Clients, s spec.Spec, secrets engine.Ref[Secrets]) engine.Ref[KeyPair] {
	name := KeyPairName(s.Name)
	imp := func(ctx context.Context, r *engine.Run) (KeyPair, error) {
		sec, err := secrets.Get(r)
		if err != nil {
			return KeyPair{}, err
		}
		out, err := c.EC2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
			KeyName:           aws.String(name),
			PublicKeyMaterial: []byte(sec.SSHPublicKey),
			TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeKeyPair, awsx.Tags(s.Ref, name)),
		})
		if awsx.HasCode(err, "InvalidKeyPair.Duplicate") {
			// A lost response to an earlier import: it is there now.
			kp, ferr := findKeyPair(ctx, c.EC2, name)
			if ferr == nil && kp != nil && samePublicKey(aws.ToString(kp.PublicKey), sec.SSHPublicKey) {
				return KeyPair{Name: name, ID: aws.ToString(kp.KeyPairId)}, nil
			}
		}
		if err != nil {
			return KeyPair{}, fmt.Errorf("import key pair %s: %w", name, err)
		}
		return KeyPair{Name: name, ID: aws.ToString(out.KeyPairId)}, nil
	}
	return engine.Add(g, engine.Resource[KeyPair]{
		ID:    StepKeyPair,
		Needs: engine.Needs(secrets),
		Title: fmt.Sprintf("EC2 key pair %s (the cluster's ed25519 key)", name),
		Find: func(ctx context.Context, r *engine.Run, prev *KeyPair) (engine.Observation[KeyPair], error) {
			sec, err := secrets.Get(r)
			if err != nil {
				return engine.Observation[KeyPair]{}, err
			}
			kp, err := findKeyPair(ctx, c.EC2, name)
			if err != nil {
				return engine.Observation[KeyPair]{}, err
			}
			switch {
			case kp == nil && prev != nil:
				return engine.Gone[KeyPair]("EC2 key pair %s was deleted outside kforge", name), nil
			case kp == nil:
				return engine.Missing[KeyPair](), nil
			}
			found := KeyPair{Name: name, ID: aws.ToString(kp.KeyPairId)}
			if o := ec2Owner(kp.Tags); o != s.Ref {
				return engine.Observation[KeyPair]{Found: true, Out: found, Drift: fmt.Sprintf("EC2 key pair %s belongs to %v, not to this cluster: delete or rename it, then run the same command again", name, o)}, nil
			}
			if !samePublicKey(aws.ToString(kp.PublicKey), sec.SSHPublicKey) {
				return engine.Drifted(found, "EC2 key pair %s holds another public key than the cluster's", name), nil
			}
			return engine.InSync(found), nil
		},
		Create: imp,
		Update: func(ctx context.Context, r *engine.Run, found KeyPair) (KeyPair, error) {
			kp, err := findKeyPair(ctx, c.EC2, name)
			if err != nil {
				return KeyPair{}, err
			}
			if kp != nil && ec2Owner(kp.Tags) != s.Ref {
				return KeyPair{}, &engine.DriftError{Step: StepKeyPair, Drift: fmt.Sprintf("EC2 key pair %s belongs to %v, not to this cluster", name, ec2Owner(kp.Tags))}
			}
			// Ours, but of another key (an earlier state was lost): replace it.
			if _, err := c.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
				return KeyPair{}, fmt.Errorf("replace key pair %s: %w", name, err)
			}
			return imp(ctx, r)
		},
		Delete: func(ctx context.Context, r *engine.Run, _ *KeyPair) error {
			kp, err := findKeyPair(ctx, c.EC2, name)
			if err != nil {
				return err
			}
			if kp == nil {
				return engine.ErrAbsent
			}
			if o := ec2Owner(kp.Tags); o != s.Ref {
				return fmt.Errorf("EC2 key pair %s is not kforge's for this cluster: not deleting it", name)
			}
			if _, err := c.EC2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("delete key pair %s: %w", name, err)
			}
			return nil
		},
	})
}

// samePublicKey compares two authorized_keys lines by type and key,
// ignoring comments.
func samePublicKey(a, b string) bool {
	fa, fb := strings.Fields(a), strings.Fields(b)
	return len(fa) >= 2 && len(fb) >= 2 && fa[0] == fb[0] && fa[1] == fb[1]
}
