package ha

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

// keyPairName is the EC2 key pair of a cluster: kforge-<name>.
func keyPairName(cluster string) string { return "kforge-" + cluster }

type keyPairOut struct {
	Name string `json:"name"`
	ID   string `json:"id"`
}

func ec2Owner(tags []ec2types.Tag) spec.Ref {
	return spec.Ref{Type: awsx.EC2TagValue(tags, awsx.TagType), Name: awsx.EC2TagValue(tags, awsx.TagCluster), Region: awsx.EC2TagValue(tags, awsx.TagRegion)}
}

func (p *Provider) findKeyPair(ctx context.Context, name string) (*ec2types.KeyPairInfo, error) {
	// A filter, not KeyNames: an absent key is an empty answer, not an
	// error.
	out, err := p.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{
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

func (p *Provider) checkKeyPair(ctx context.Context, ref spec.Ref) error {
	kp, err := p.findKeyPair(ctx, keyPairName(ref.Name))
	if err != nil || kp == nil {
		return err
	}
	if o := ec2Owner(kp.Tags); o != ref {
		return spec.Usagef("EC2 key pair %s already exists in %s and is not kforge's for this cluster: pick another cluster name", keyPairName(ref.Name), ref.Region)
	}
	return nil
}

func (p *Provider) keyPairStep(s spec.Spec) *engine.Step {
	name := keyPairName(s.Name)
	return &engine.Step{
		ID:    StepKeyPair,
		Needs: []string{StepSecrets},
		Title: fmt.Sprintf("EC2 key pair %s (the cluster's ed25519 key)", name),
		Ensure: func(ctx context.Context, r *engine.Run) (any, error) {
			sec, err := engine.Out[secretsOut](r, StepSecrets)
			if err != nil {
				return nil, err
			}
			kp, err := p.findKeyPair(ctx, name)
			if err != nil {
				return nil, err
			}
			if kp != nil {
				if o := ec2Owner(kp.Tags); o != s.Ref {
					return nil, fmt.Errorf("EC2 key pair %s belongs to %v, not to this cluster", name, o)
				}
				if samePublicKey(aws.ToString(kp.PublicKey), sec.SSHPublicKey) {
					return keyPairOut{Name: name, ID: aws.ToString(kp.KeyPairId)}, nil
				}
				// Ours, but of an earlier key (state was lost): replace it.
				if _, err := p.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}); err != nil {
					return nil, fmt.Errorf("replace key pair %s: %w", name, err)
				}
			}
			out, err := p.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
				KeyName:           aws.String(name),
				PublicKeyMaterial: []byte(sec.SSHPublicKey),
				TagSpecifications: awsx.EC2TagSpec(ec2types.ResourceTypeKeyPair, awsx.Tags(s.Ref, name)),
			})
			if awsx.HasCode(err, "InvalidKeyPair.Duplicate") {
				// A lost response to an earlier import: it is there now.
				kp, ferr := p.findKeyPair(ctx, name)
				if ferr == nil && kp != nil && samePublicKey(aws.ToString(kp.PublicKey), sec.SSHPublicKey) {
					return keyPairOut{Name: name, ID: aws.ToString(kp.KeyPairId)}, nil
				}
			}
			if err != nil {
				return nil, fmt.Errorf("import key pair %s: %w", name, err)
			}
			return keyPairOut{Name: name, ID: aws.ToString(out.KeyPairId)}, nil
		},
		Delete: func(ctx context.Context, r *engine.Run) error {
			kp, err := p.findKeyPair(ctx, name)
			if err != nil {
				return err
			}
			if kp == nil {
				return engine.ErrAbsent
			}
			if o := ec2Owner(kp.Tags); o != s.Ref {
				return fmt.Errorf("EC2 key pair %s is not kforge's for this cluster: not deleting it", name)
			}
			if _, err := p.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String(name)}); err != nil && !awsx.IsNotFound(err) {
				return fmt.Errorf("delete key pair %s: %w", name, err)
			}
			return nil
		},
	}
}

// samePublicKey compares two authorized_keys lines by type and key,
// ignoring comments.
func samePublicKey(a, b string) bool {
	fa, fb := strings.Fields(a), strings.Fields(b)
	return len(fa) >= 2 && len(fb) >= 2 && fa[0] == fb[0] && fa[1] == fb[1]
}
