package eksaddons

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// The cluster access the emulator ignores: CreateCluster's accessConfig and
// the access entries EKS makes from it, in the EKS API's shapes
// (aws-sdk-go-v2 service/eks types AccessConfigResponse, AccessEntry,
// AssociatedAccessPolicy). A cluster's authentication mode is what its
// CreateCluster asked for, CONFIG_MAP when it asked for none (EKS's
// default for clusters made through the API); bootstrapping the creator's
// admin permissions is asked for unless it is set false (EKS's default is
// true). In the API or API_AND_CONFIG_MAP mode, that gives the calling
// principal an access entry of type STANDARD with AmazonEKSClusterAdminPolicy
// associated at cluster scope, as EKS does. DescribeCluster answers carry
// the accessConfig; ListAccessEntries, DescribeAccessEntry and
// ListAssociatedAccessPolicies are served, and refused as EKS refuses them
// for a cluster in the CONFIG_MAP mode. Entries go with their cluster.
// The access entries EKS makes for managed node groups' roles, and the
// calls that change entries, are not modelled.

// Authentication modes (eks types AuthenticationMode).
const (
	ModeConfigMap       = "CONFIG_MAP"
	ModeAPI             = "API"
	ModeAPIAndConfigMap = "API_AND_CONFIG_MAP"
)

// AccessConfig is a cluster's access configuration as the double holds it.
type AccessConfig struct {
	// AuthenticationMode and BootstrapAdmin are the cluster's, with EKS's
	// defaults for what CreateCluster left out.
	AuthenticationMode string
	BootstrapAdmin     bool
	// Requested is the accessConfig the CreateCluster request carried, as
	// sent (nil fields: not sent).
	Requested struct {
		AuthenticationMode                      *string `json:"authenticationMode"`
		BootstrapClusterCreatorAdminPermissions *bool   `json:"bootstrapClusterCreatorAdminPermissions"`
	}
}

// AccessEntry is an access entry the double holds.
type AccessEntry struct {
	Cluster, PrincipalARN, ARN, Type, Username string
	KubernetesGroups                           []string
	Created                                    time.Time
	Policies                                   []AssociatedPolicy
}

// AssociatedPolicy is an access policy associated with an access entry.
type AssociatedPolicy struct {
	PolicyARN string
	// ScopeType is "cluster" or "namespace" (with Namespaces).
	ScopeType  string
	Namespaces []string
	Associated time.Time
}

// ClusterAdminPolicyARN is the ARN of the AmazonEKSClusterAdminPolicy
// access policy in a partition.
func ClusterAdminPolicyARN(partition string) string {
	return "arn:" + partition + ":eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
}

var (
	accessKeyRE      = regexp.MustCompile(`Credential=([^/,\s]+)/`)
	assumedRoleARNRE = regexp.MustCompile(`^arn:([^:]+):sts::([0-9]+):assumed-role/([^/]+)/[^/]+$`)
	stsUserARNRE     = regexp.MustCompile(`^arn:([^:]+):sts::([0-9]+):user/(.+)$`)
)

// PrincipalARN is the IAM principal EKS records for a caller, from the ARN
// STS's GetCallerIdentity gives: the role of an assumed-role session, else
// the caller itself. The emulator names a caller whose keys it did not
// issue arn:<partition>:sts::<account>:user/moto; that is taken as the
// IAM user moto of the account.
func PrincipalARN(callerARN string) string {
	if m := assumedRoleARNRE.FindStringSubmatch(callerARN); m != nil {
		return "arn:" + m[1] + ":iam::" + m[2] + ":role/" + m[3]
	}
	if m := stsUserARNRE.FindStringSubmatch(callerARN); m != nil {
		return "arn:" + m[1] + ":iam::" + m[2] + ":user/" + m[3]
	}
	return callerARN
}

// AccessConfig returns the access configuration of a cluster the double
// saw created.
func (d *Double) AccessConfig(region, cluster string) (AccessConfig, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c, ok := d.access[key(region, cluster, "")]
	return c, ok
}

// AccessEntries returns the access entries of a cluster, by principal ARN.
func (d *Double) AccessEntries(region, cluster string) map[string]AccessEntry {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := map[string]AccessEntry{}
	for k, e := range d.entries {
		if strings.HasPrefix(k, key(region, cluster, "")) {
			out[e.PrincipalARN] = *e
		}
	}
	return out
}

// rememberAccess records the access configuration of a cluster the
// emulator has just made, and the creator's access entry when EKS would
// make one. r is the CreateCluster request, body its body, clusterARN the
// emulator's ARN of the new cluster.
func (d *Double) rememberAccess(r *http.Request, region, cluster, clusterARN string, body []byte) {
	var in struct {
		AccessConfig *json.RawMessage `json:"accessConfig"`
	}
	var cfg AccessConfig
	if json.Unmarshal(body, &in) == nil && in.AccessConfig != nil {
		_ = json.Unmarshal(*in.AccessConfig, &cfg.Requested)
	}
	cfg.AuthenticationMode = aws.ToString(cfg.Requested.AuthenticationMode)
	if cfg.AuthenticationMode == "" {
		cfg.AuthenticationMode = ModeConfigMap
	}
	cfg.BootstrapAdmin = cfg.Requested.BootstrapClusterCreatorAdminPermissions == nil || *cfg.Requested.BootstrapClusterCreatorAdminPermissions
	d.mu.Lock()
	d.access[key(region, cluster, "")] = cfg
	d.mu.Unlock()
	if !cfg.BootstrapAdmin || cfg.AuthenticationMode == ModeConfigMap {
		return
	}
	parts := strings.Split(clusterARN, ":") // arn:<partition>:eks:<region>:<account>:cluster/<name>
	if len(parts) < 6 {
		log.Printf("eksaddons: cluster %s has ARN %q: no access entry for its creator", cluster, clusterARN)
		return
	}
	partition, account := parts[1], parts[4]
	caller, err := d.caller(r, region)
	if err != nil {
		log.Printf("eksaddons: the creator of cluster %s is unknown (%v): no access entry for it", cluster, err)
		return
	}
	principal := PrincipalARN(caller)
	kind, username := "user", principal
	if m := assumedRoleARNRE.FindStringSubmatch(caller); m != nil {
		kind, username = "role", "arn:"+m[1]+":sts::"+m[2]+":assumed-role/"+m[3]+"/{{SessionName}}"
	}
	now := time.Now().UTC().Truncate(time.Second)
	e := &AccessEntry{
		Cluster: cluster, PrincipalARN: principal, Type: "STANDARD", Username: username, KubernetesGroups: []string{}, Created: now,
		ARN: fmt.Sprintf("arn:%s:eks:%s:%s:access-entry/%s/%s/%s/%s/%s", partition, region, account, cluster, kind, account,
			principal[strings.LastIndex(principal, "/")+1:], entryID()),
		Policies: []AssociatedPolicy{{PolicyARN: ClusterAdminPolicyARN(partition), ScopeType: "cluster", Namespaces: []string{}, Associated: now}},
	}
	d.mu.Lock()
	d.entries[key(region, cluster, principal)] = e
	d.mu.Unlock()
}

// entryID is the random part of an access entry's ARN (a UUID in EKS).
func entryID() string {
	n := time.Now().UnixNano()
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(n), uint16(n>>32), n&0xfff, (n>>12)&0xfff, n&0xffffffffffff)
}

// caller asks the emulator's STS who signed r: GetCallerIdentity with r's
// access key ID (and session token). The emulator answers from the access
// key alone: an IAM user's keys name the user, an assumed role's session
// keys the session, other keys its placeholder user. It does not check
// the signature, which the double cannot make without the secret key,
// unless IAM enforcement is on; then this fails, and the creator gets no
// entry (logged).
func (d *Double) caller(r *http.Request, region string) (string, error) {
	m := accessKeyRE.FindStringSubmatch(r.Header.Get("Authorization"))
	if m == nil {
		return "", fmt.Errorf("the request names no access key")
	}
	creds := credentials.NewStaticCredentialsProvider(m[1], "unknown-to-the-double", r.Header.Get("X-Amz-Security-Token"))
	c := sts.New(sts.Options{
		Region: region, Credentials: creds, BaseEndpoint: aws.String("http://emulator.invalid"),
		HTTPClient: handlerClient{d.next}, RetryMaxAttempts: 1,
	})
	out, err := c.GetCallerIdentity(context.Background(), &sts.GetCallerIdentityInput{})
	if err != nil {
		return "", err
	}
	return aws.ToString(out.Arn), nil
}

// handlerClient sends SDK requests to an http.Handler in the process.
type handlerClient struct{ h http.Handler }

func (c handlerClient) Do(r *http.Request) (*http.Response, error) {
	return httptestRecorder(c.h, r).Result(), nil
}

// accessRoute is a request for a cluster's access entries: the cluster,
// and the principal ARN and "access-policies" when the path names them.
type accessRoute struct {
	cluster, principal string
	policies           bool
}

// parseAccessRoute reads the access-entry routes from r's escaped path
// (a principal ARN is one path label, its "/" escaped as %2F).
func parseAccessRoute(r *http.Request) (accessRoute, bool) {
	seg := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/"), "/")
	if len(seg) < 3 || len(seg) > 5 || seg[0] != "clusters" || seg[2] != "access-entries" {
		return accessRoute{}, false
	}
	for i, s := range seg {
		u, err := url.PathUnescape(s)
		if err != nil || u == "" {
			return accessRoute{}, false
		}
		seg[i] = u
	}
	a := accessRoute{cluster: seg[1]}
	if len(seg) >= 4 {
		a.principal = seg[3]
	}
	if len(seg) == 5 {
		if seg[4] != "access-policies" {
			return accessRoute{}, false
		}
		a.policies = true
	}
	return a, true
}

// accessEntries serves ListAccessEntries, DescribeAccessEntry and
// ListAssociatedAccessPolicies; it reports whether it served r.
func (d *Double) accessEntries(w http.ResponseWriter, r *http.Request, region string) bool {
	a, ok := parseAccessRoute(r)
	if !ok || r.Method != http.MethodGet {
		return false
	}
	op := "ListAccessEntries"
	switch {
	case a.policies:
		op = "ListAssociatedAccessPolicies"
	case a.principal != "":
		op = "DescribeAccessEntry"
	}
	d.record(op, region, a.cluster)
	d.mu.Lock()
	defer d.mu.Unlock()
	cfg, ok := d.access[key(region, a.cluster, "")]
	switch {
	case !d.clusters[region+"/"+a.cluster]:
		fail(w, 404, "ResourceNotFoundException", "No cluster found for name: %s.", a.cluster)
		return true
	case !ok || cfg.AuthenticationMode == ModeConfigMap:
		fail(w, 400, "InvalidRequestException", "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform this operation.")
		return true
	}
	q := r.URL.Query()
	if a.principal == "" {
		var arns []string
		for k, e := range d.entries {
			if !strings.HasPrefix(k, key(region, a.cluster, "")) {
				continue
			}
			if p := q.Get("associatedPolicyArn"); p != "" && !e.hasPolicy(p) {
				continue
			}
			arns = append(arns, e.PrincipalARN)
		}
		sort.Strings(arns)
		page, next, err := paginate(arns, q)
		if err != nil {
			fail(w, 400, "InvalidParameterException", "%v", err)
			return true
		}
		reply(w, withNext(map[string]any{"accessEntries": page}, next))
		return true
	}
	e := d.entries[key(region, a.cluster, a.principal)]
	if e == nil {
		fail(w, 404, "ResourceNotFoundException", "The specified principalArn could not be found. You can view your available access entries with 'list-access-entries'.")
		return true
	}
	if !a.policies {
		reply(w, map[string]any{"accessEntry": e.shape()})
		return true
	}
	shapes := make([]map[string]any, 0, len(e.Policies))
	for _, p := range e.Policies {
		shapes = append(shapes, map[string]any{
			"policyArn":    p.PolicyARN,
			"accessScope":  map[string]any{"type": p.ScopeType, "namespaces": p.Namespaces},
			"associatedAt": p.Associated.Unix(), "modifiedAt": p.Associated.Unix(),
		})
	}
	page, next, err := paginate(shapes, q)
	if err != nil {
		fail(w, 400, "InvalidParameterException", "%v", err)
		return true
	}
	reply(w, withNext(map[string]any{"clusterName": a.cluster, "principalArn": e.PrincipalARN, "associatedAccessPolicies": page}, next))
	return true
}

func (e *AccessEntry) hasPolicy(arn string) bool {
	return slices.ContainsFunc(e.Policies, func(p AssociatedPolicy) bool { return p.PolicyARN == arn })
}

// shape is the access entry as the EKS API describes it.
func (e *AccessEntry) shape() map[string]any {
	return map[string]any{
		"clusterName": e.Cluster, "principalArn": e.PrincipalARN, "kubernetesGroups": e.KubernetesGroups,
		"accessEntryArn": e.ARN, "createdAt": e.Created.Unix(), "modifiedAt": e.Created.Unix(),
		"tags": map[string]string{}, "username": e.Username, "type": e.Type,
	}
}

// paginate returns the page of items that the query's maxResults (1 to
// 100, default 100) and nextToken (an offset the double gave) select, and
// the token of the next page ("" at the end).
func paginate[T any](items []T, q url.Values) ([]T, string, error) {
	limit, start := 100, 0
	if s := q.Get("maxResults"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100 {
			return nil, "", fmt.Errorf("maxResults %q: want 1 to 100", s)
		}
		limit = n
	}
	if s := q.Get("nextToken"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > len(items) {
			return nil, "", fmt.Errorf("nextToken %q is not valid", s)
		}
		start = n
	}
	end := min(start+limit, len(items))
	next := ""
	if end < len(items) {
		next = strconv.Itoa(end)
	}
	return append([]T{}, items[start:end]...), next, nil
}

// withNext adds nextToken to an answer when there is a next page.
func withNext(answer map[string]any, next string) map[string]any {
	if next != "" {
		answer["nextToken"] = next
	}
	return answer
}

// shape is the access configuration as DescribeCluster answers it.
func (c AccessConfig) shape() map[string]any {
	return map[string]any{"authenticationMode": c.AuthenticationMode, "bootstrapClusterCreatorAdminPermissions": c.BootstrapAdmin}
}
