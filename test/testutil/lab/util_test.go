//go:build lab && linux

package lab

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	ec2types "github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"golang.org/x/crypto/ssh"
	"sigs.k8s.io/yaml"

	"github.com/kforge/kforge/test/testutil/moto"
)

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the lab needs root")
	}
}

// testCloudConfig mirrors the user-data internal/ha renders for a VM (its
// renderer is not exported): hostname and the pinned SSH host key.
type testCloudConfig struct {
	Hostname         string            `json:"hostname"`
	PreserveHostname bool              `json:"preserve_hostname"`
	ManageEtcHosts   bool              `json:"manage_etc_hosts"`
	SSHKeys          map[string]string `json:"ssh_keys"`
	SSHDeleteKeys    bool              `json:"ssh_deletekeys"`
	SSHGenKeyTypes   []string          `json:"ssh_genkeytypes"`
}

// vmUserData renders a VM's user-data as kforge does, base64-encoded.
func vmUserData(t testing.TB, hostname string, key ed25519.PrivateKey) string {
	t.Helper()
	block, err := ssh.MarshalPrivateKey(key, hostname)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(testCloudConfig{
		Hostname:       hostname,
		ManageEtcHosts: true,
		SSHKeys: map[string]string{
			"ed25519_private": string(pem.EncodeToMemory(block)),
			"ed25519_public":  string(ssh.MarshalAuthorizedKey(pub)),
		},
		SSHDeleteKeys:  true,
		SSHGenKeyTypes: []string{"ed25519"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(append([]byte("#cloud-config\n"), b...))
}

// testVPC is a VPC with one public subnet and a key pair in the emulator.
type testVPC struct {
	ec2      *ec2.Client
	vpcID    string
	subnetID string
	keyName  string
	login    ssh.Signer // the key pair's private key: logs in as ubuntu
	loginKey ed25519.PrivateKey
}

// newTestVPC creates 10.0.0.0/16 with 10.0.1.0/24 and imports a key pair
// generated here.
func newTestVPC(t testing.TB, ctx context.Context, cfg aws.Config) *testVPC {
	t.Helper()
	c := ec2.NewFromConfig(cfg)
	vpc, err := c.CreateVpc(ctx, &ec2.CreateVpcInput{CidrBlock: aws.String("10.0.0.0/16")})
	if err != nil {
		t.Fatal(err)
	}
	sub, err := c.CreateSubnet(ctx, &ec2.CreateSubnetInput{VpcId: vpc.Vpc.VpcId, CidrBlock: aws.String("10.0.1.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ModifySubnetAttribute(ctx, &ec2.ModifySubnetAttributeInput{
		SubnetId: sub.Subnet.SubnetId, MapPublicIpOnLaunch: &ec2types.AttributeBooleanValue{Value: aws.Bool(true)},
	}); err != nil {
		t.Fatal(err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	name := "kforge-labtest"
	if _, err := c.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{
		KeyName: aws.String(name), PublicKeyMaterial: ssh.MarshalAuthorizedKey(signer.PublicKey()),
	}); err != nil {
		t.Fatal(err)
	}
	return &testVPC{ec2: c, vpcID: aws.ToString(vpc.Vpc.VpcId), subnetID: aws.ToString(sub.Subnet.SubnetId), keyName: name, login: signer, loginKey: priv}
}

// testVM is an instance launched by a test, with the host key its
// user-data carries.
type testVM struct {
	id       string
	hostname string
	role     string
	hostKey  ssh.PublicKey
	launched time.Time
}

// runVM launches one instance as kforge launches a VM: its own user-data
// (hostname and host key), the cluster key pair, kforge's tags.
func (v *testVPC) runVM(t testing.TB, ctx context.Context, hostname, role string) testVM {
	t.Helper()
	_, hk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.NewPublicKey(hk.Public())
	if err != nil {
		t.Fatal(err)
	}
	out, err := v.ec2.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: aws.String(moto.UbuntuNobleAMD64), InstanceType: ec2types.InstanceTypeT3Small,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1),
		SubnetId: aws.String(v.subnetID), KeyName: aws.String(v.keyName),
		UserData: aws.String(vmUserData(t, hostname, hk)),
		TagSpecifications: []ec2types.TagSpecification{{
			ResourceType: ec2types.ResourceTypeInstance,
			Tags: []ec2types.Tag{
				{Key: aws.String("Name"), Value: aws.String(hostname)},
				{Key: aws.String("kforge.io/role"), Value: aws.String(role)},
				{Key: aws.String("kforge.io/cluster"), Value: aws.String("labtest")},
			},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return testVM{id: aws.ToString(out.Instances[0].InstanceId), hostname: hostname, role: role, hostKey: pub, launched: time.Now()}
}

// sshVia logs in to a host as ubuntu through the lab's jump host, as
// OpenSSH's ProxyJump does: an SSH connection to 127.0.0.1:<port>, a
// direct-tcpip channel to the host's private IP, port 22, and a second
// SSH connection over it that accepts only the host key of the user-data.
func sshVia(ctx context.Context, l *Lab, jumpKey ssh.HostKeyCallback, login ssh.Signer, privateIP string, hostKey ssh.PublicKey) (*ssh.Client, func(), error) {
	jc, err := ssh.Dial("tcp", l.JumpAddr(), &ssh.ClientConfig{
		User: l.JumpUser(), Auth: []ssh.AuthMethod{ssh.PublicKeys(login)},
		HostKeyCallback: jumpKey, Timeout: 10 * time.Second,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("jump host: %w", err)
	}
	addr := privateIP + ":22"
	conn, err := jc.DialContext(ctx, "tcp", addr)
	if err != nil {
		jc.Close()
		return nil, nil, fmt.Errorf("through the jump host to %s: %w", addr, err)
	}
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, &ssh.ClientConfig{
		User: "ubuntu", Auth: []ssh.AuthMethod{ssh.PublicKeys(login)},
		HostKeyCallback: ssh.FixedHostKey(hostKey), Timeout: 10 * time.Second,
	})
	if err != nil {
		jc.Close()
		return nil, nil, fmt.Errorf("log in to %s: %w", addr, err)
	}
	client := ssh.NewClient(c, chans, reqs)
	return client, func() { client.Close(); jc.Close() }, nil
}

// runSSH runs a command over an SSH client and returns its combined
// output.
func runSSH(c *ssh.Client, cmd string) (string, error) {
	s, err := c.NewSession()
	if err != nil {
		return "", err
	}
	defer s.Close()
	out, err := s.CombinedOutput(cmd)
	return strings.TrimSpace(string(out)), err
}

// newKey generates an ed25519 private key.
func newKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
