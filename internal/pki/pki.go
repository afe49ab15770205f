// Package pki makes the certificate authorities and certificates of an
// ha-aws cluster: the etcd CA and its server, peer and client certificates,
// and the Kubernetes cluster CA that kforge hands to kubeadm.
//
// Every key is ECDSA P-256. A CA is valid for ten years (CAValidity); a
// certificate it issues is valid for five years (LeafValidity), never past
// the CA's own expiry. kforge does not rotate certificates yet, so leaf
// certificates are made long-lived enough to outlast a typical cluster while
// staying well inside the CA's lifetime. NotBefore is set an hour in the past
// so that a VM whose clock runs slightly behind accepts a certificate made a
// moment ago.
//
// CAs and certificates travel as PEM (PEMPair) so they can be kept in cluster
// state and written to VMs as they are.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"time"
)

// Validity periods and the clock-skew allowance of issued certificates.
const (
	CAValidity   = 10 * 365 * 24 * time.Hour
	LeafValidity = 5 * 365 * 24 * time.Hour
	ClockSkew    = time.Hour
)

// PEM block types written by this package.
const (
	certificateBlock = "CERTIFICATE"
	privateKeyBlock  = "PRIVATE KEY" // PKCS #8
)

// Usage says what an issued certificate may be used for.
type Usage int

// Certificate usages.
const (
	// Server certificates authenticate a TLS server (ExtKeyUsageServerAuth).
	Server Usage = iota + 1
	// Client certificates authenticate a TLS client (ExtKeyUsageClientAuth).
	Client
	// Peer certificates serve both ends of a connection between members of
	// one cluster, such as etcd peers (server and client auth).
	Peer
)

// String returns the usage's name.
func (u Usage) String() string {
	switch u {
	case Server:
		return "server"
	case Client:
		return "client"
	case Peer:
		return "peer"
	}
	return fmt.Sprintf("Usage(%d)", int(u))
}

// extKeyUsages returns the extended key usages of u.
func (u Usage) extKeyUsages() ([]x509.ExtKeyUsage, error) {
	switch u {
	case Server:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, nil
	case Client:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil
	case Peer:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, nil
	}
	return nil, fmt.Errorf("unknown certificate usage %d", int(u))
}

// KeyPair is a certificate with its private key: a CA or a certificate it
// issued.
type KeyPair struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// PEMPair is a PEM-encoded certificate and its PEM-encoded (PKCS #8) private
// key, as kept in cluster state and written to VMs.
type PEMPair struct {
	Cert []byte `json:"cert"`
	Key  []byte `json:"key"`
}

// Request describes a certificate to issue.
type Request struct {
	// CommonName is the subject's CN (for Kubernetes client certificates, the
	// user name).
	CommonName string
	// Organization is the subject's O (for Kubernetes client certificates,
	// the groups).
	Organization []string
	// DNSNames and IPs are the subject alternative names; a server or peer
	// certificate is only valid for the names and addresses listed here.
	DNSNames []string
	IPs      []netip.Addr
	// Usage is what the certificate is for.
	Usage Usage
}

// NewCA makes a self-signed certificate authority with the given common name,
// valid from now for CAValidity.
func NewCA(commonName string) (*KeyPair, error) {
	if commonName == "" {
		return nil, errors.New("create CA: a common name is required")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: generate key: %w", commonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", commonName, err)
	}
	skid, err := subjectKeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: %w", commonName, err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: sign: %w", commonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("create CA %q: parse: %w", commonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// Issue makes a certificate signed by ca (which must be a CA) for req, valid
// from now for LeafValidity or until the CA expires, whichever is sooner.
func (ca *KeyPair) Issue(req Request) (*KeyPair, error) {
	if ca == nil || ca.Cert == nil || ca.Key == nil {
		return nil, errors.New("issue certificate: no CA")
	}
	if !ca.Cert.IsCA {
		return nil, fmt.Errorf("issue certificate %q: %q is not a CA", req.CommonName, ca.Cert.Subject.CommonName)
	}
	if req.CommonName == "" {
		return nil, errors.New("issue certificate: a common name is required")
	}
	ekus, err := req.Usage.extKeyUsages()
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", req.CommonName, err)
	}
	if (req.Usage == Server || req.Usage == Peer) && len(req.DNSNames) == 0 && len(req.IPs) == 0 {
		return nil, fmt.Errorf("issue %s certificate %q: at least one DNS name or IP address is required", req.Usage, req.CommonName)
	}
	ips := make([]net.IP, 0, len(req.IPs))
	for _, a := range req.IPs {
		if !a.IsValid() {
			return nil, fmt.Errorf("issue certificate %q: invalid IP address", req.CommonName)
		}
		ips = append(ips, a.AsSlice())
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: generate key: %w", req.CommonName, err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", req.CommonName, err)
	}
	skid, err := subjectKeyID(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: %w", req.CommonName, err)
	}
	now := time.Now()
	notAfter := now.Add(LeafValidity)
	if notAfter.After(ca.Cert.NotAfter) {
		notAfter = ca.Cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: req.CommonName, Organization: req.Organization},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           ekus,
		BasicConstraintsValid: true,
		DNSNames:              req.DNSNames,
		IPAddresses:           ips,
		SubjectKeyId:          skid,
		AuthorityKeyId:        ca.Cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: sign: %w", req.CommonName, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("issue certificate %q: parse: %w", req.CommonName, err)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// CertPEM returns the certificate, PEM-encoded.
func (kp *KeyPair) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: certificateBlock, Bytes: kp.Cert.Raw})
}

// PEM returns the certificate and its private key, PEM-encoded.
func (kp *KeyPair) PEM() (PEMPair, error) {
	der, err := x509.MarshalPKCS8PrivateKey(kp.Key)
	if err != nil {
		return PEMPair{}, fmt.Errorf("encode private key of %q: %w", kp.Cert.Subject.CommonName, err)
	}
	return PEMPair{
		Cert: kp.CertPEM(),
		Key:  pem.EncodeToMemory(&pem.Block{Type: privateKeyBlock, Bytes: der}),
	}, nil
}

// ParseKeyPair decodes a PEM-encoded certificate and private key (PKCS #8 or
// SEC 1) and checks that the key belongs to the certificate.
func ParseKeyPair(p PEMPair) (*KeyPair, error) {
	cert, err := ParseCertificate(p.Cert)
	if err != nil {
		return nil, err
	}
	key, err := parseECKey(p.Key)
	if err != nil {
		return nil, fmt.Errorf("parse private key of %q: %w", cert.Subject.CommonName, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(&key.PublicKey) {
		return nil, fmt.Errorf("parse key pair %q: the private key does not belong to the certificate", cert.Subject.CommonName)
	}
	return &KeyPair{Cert: cert, Key: key}, nil
}

// ParseCertificate decodes the first PEM certificate in data.
func ParseCertificate(data []byte) (*x509.Certificate, error) {
	for rest := data; ; {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("parse certificate: no PEM CERTIFICATE block found")
		}
		if block.Type != certificateBlock {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert, nil
	}
}

// parseECKey decodes a PEM private key in PKCS #8 or SEC 1 form.
func parseECKey(data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case privateKeyBlock:
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ec, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("unsupported key type %T (want ECDSA)", k)
		}
		return ec, nil
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
}

// SPKIHash returns "sha256:" and the hex SHA-256 of the certificate's
// SubjectPublicKeyInfo: the form of kubeadm's discovery-token-ca-cert-hash
// (caCertHashes), which pins the cluster CA for joining nodes.
func SPKIHash(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// newSerial returns a random positive 127-bit serial number.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// subjectKeyID derives a key identifier from a public key (SHA-256 of its
// DER encoding, truncated to 20 bytes).
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return bytes.Clone(sum[:20]), nil
}
