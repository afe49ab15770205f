package infra

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/kforge/kforge/internal/engine"
	"github.com/kforge/kforge/internal/spec"
)

// CanonicalOwner is the AWS account of Canonical's Ubuntu images.
const CanonicalOwner = "099720109477"

// Image is the AMI a VM boots.
type Image struct {
	ID         string `json:"id"`
	Name       string `json:"name"`
	Arch       string `json:"arch"`
	RootDevice string `json:"rootDevice"`
}

// Images maps each instance type of the cluster to its image.
type Images struct {
	ByType map[string]Image `json:"byType"`
}

// ubuntuArch is Canonical's name for an EC2 architecture.
func ubuntuArch(arch string) string {
	if arch == "arm64" {
		return "arm64"
	}
	return "amd64"
}

// addImages looks up, once per create, the architecture of every instance
// type the cluster uses (one DescribeInstanceTypes) and the newest Ubuntu
// 24.04 LTS image of Canonical for each architecture (one DescribeImages
// each), or checks the --ami given. It is an action: a reconcile keeps the
// images the VMs were launched with (a newer image does not replace VMs).
func addImages(g *engine.Graph, c *Clients, s spec.Spec) engine.Ref[Images] {
	typeList := ClusterTypes(s)
	title := fmt.Sprintf("find the newest Ubuntu 24.04 LTS image of Canonical for %s", strings.Join(typeList, ", "))
	if s.AMI != "" {
		title = fmt.Sprintf("check image %s for %s", s.AMI, strings.Join(typeList, ", "))
	}
	return engine.AddAction(g, engine.Action[Images]{
		ID:     StepImages,
		Title:  title,
		Inputs: struct{ Types []string }{typeList},
		Do: func(ctx context.Context, r *engine.Run) (Images, error) {
			res := Images{ByType: map[string]Image{}}
			arch, err := TypeArches(ctx, c.EC2, s.Region, typeList)
			if err != nil {
				return res, err
			}
			byArch := map[string]Image{}
			for _, t := range typeList {
				a := arch[t]
				img, ok := byArch[a]
				if !ok {
					if img, err = findImage(ctx, c.EC2, s, a); err != nil {
						return res, err
					}
					byArch[a] = img
				}
				if img.Arch != a {
					return res, fmt.Errorf("image %s is for %s, but instance type %s is %s", img.ID, img.Arch, t, a)
				}
				res.ByType[t] = img
			}
			return res, nil
		},
	})
}

// ClusterTypes lists the instance types of a cluster, sorted.
func ClusterTypes(s spec.Spec) []string {
	types := map[string]bool{}
	for _, role := range Roles {
		types[Size(s, role)] = true
	}
	var l []string
	for t := range types {
		l = append(l, t)
	}
	sort.Strings(l)
	return l
}

// TypeArches returns the EC2 architecture (x86_64, arm64) of each
// instance type, with one DescribeInstanceTypes.
func TypeArches(ctx context.Context, c *ec2.Client, region string, typeList []string) (map[string]string, error) {
	out, err := c.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: toInstanceTypes(typeList)})
	if err != nil {
		return nil, fmt.Errorf("look up instance types %v in %s (is each offered there?): %w", typeList, region, err)
	}
	arch := map[string]string{}
	for _, it := range out.InstanceTypes {
		a := "x86_64"
		if it.ProcessorInfo != nil {
			for _, sa := range it.ProcessorInfo.SupportedArchitectures {
				if sa == ec2types.ArchitectureTypeArm64 {
					a = "arm64"
				}
			}
		}
		arch[string(it.InstanceType)] = a
	}
	for _, t := range typeList {
		if arch[t] == "" {
			return nil, fmt.Errorf("instance type %s is not offered in %s", t, region)
		}
	}
	return arch, nil
}

func toInstanceTypes(l []string) []ec2types.InstanceType {
	out := make([]ec2types.InstanceType, len(l))
	for i, t := range l {
		out[i] = ec2types.InstanceType(t)
	}
	return out
}

// ImageQuery is the look-up of the image the VMs of an architecture boot
// (--ami, else the newest Ubuntu 24.04 LTS of Canonical), and the account
// that must own the image found (empty: any).
func ImageQuery(s spec.Spec, arch string) (*ec2.DescribeImagesInput, string) {
	if s.AMI != "" {
		return &ec2.DescribeImagesInput{ImageIds: []string{s.AMI}}, ""
	}
	return &ec2.DescribeImagesInput{
		Owners: []string{CanonicalOwner},
		Filters: []ec2types.Filter{
			{Name: aws.String("name"), Values: []string{"ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-" + ubuntuArch(arch) + "-server-*"}},
			{Name: aws.String("architecture"), Values: []string{arch}},
			{Name: aws.String("state"), Values: []string{"available"}},
			{Name: aws.String("root-device-type"), Values: []string{"ebs"}},
		},
	}, CanonicalOwner
}

func findImage(ctx context.Context, c *ec2.Client, s spec.Spec, arch string) (Image, error) {
	in, _ := ImageQuery(s, arch)
	out, err := c.DescribeImages(ctx, in)
	if err != nil {
		return Image{}, fmt.Errorf("look up images: %w", err)
	}
	var best *ec2types.Image
	for i := range out.Images {
		im := &out.Images[i]
		if s.AMI == "" && aws.ToString(im.OwnerId) != CanonicalOwner {
			continue
		}
		// Newest first; Canonical's names end in the build date, which
		// breaks ties.
		if best == nil || aws.ToString(im.CreationDate) > aws.ToString(best.CreationDate) ||
			aws.ToString(im.CreationDate) == aws.ToString(best.CreationDate) && aws.ToString(im.Name) > aws.ToString(best.Name) {
			best = im
		}
	}
	if best == nil {
		if s.AMI != "" {
			return Image{}, fmt.Errorf("image %s is not found in %s", s.AMI, s.Region)
		}
		return Image{}, fmt.Errorf("no Ubuntu 24.04 LTS image of Canonical for %s in %s: pass --ami", arch, s.Region)
	}
	return Image{ID: aws.ToString(best.ImageId), Name: aws.ToString(best.Name), Arch: string(best.Architecture), RootDevice: aws.ToString(best.RootDeviceName)}, nil
}
