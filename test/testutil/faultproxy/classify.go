package faultproxy

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
)

// Call is one AWS API call seen by the proxy.
type Call struct {
	// Service is the signing name of the service: "ec2", "iam", "sts",
	// "eks", "elasticloadbalancing", "s3", ...
	Service string
	// Region is the region the call was signed for.
	Region string
	// Action is the API operation: "RunInstances", "CreateCluster", ...
	Action string
	// Mutating is false for calls that only read (Describe*, List*,
	// Get*, Head*, ...).
	Mutating bool
	// Method and Path are those of the HTTP request.
	Method, Path string
	// Params are the parameters of a query-protocol call (EC2, IAM, STS,
	// ELB), nil for other protocols.
	Params url.Values
	// Token is the call's idempotency token (ClientToken,
	// clientRequestToken), if it has one.
	Token string
}

// String renders the call as service:Action.
func (c Call) String() string { return c.Service + ":" + c.Action }

// readPrefixes are the operation name prefixes of calls that change
// nothing.
var readPrefixes = []string{"Describe", "List", "Get", "Head", "Search", "Lookup", "Simulate", "Check", "Validate", "Preview"}

// isMutating reports whether an operation may change something in AWS.
func isMutating(service, action string) bool {
	if service == "sts" {
		return false // credentials only: GetCallerIdentity, AssumeRole, ...
	}
	for _, p := range readPrefixes {
		if strings.HasPrefix(action, p) {
			return false
		}
	}
	return true
}

// scope returns the service and region of a SigV4 Authorization header
// (Credential=AKID/date/region/service/aws4_request).
func scope(auth string) (service, region string) {
	i := strings.Index(auth, "Credential=")
	if i < 0 {
		return "", ""
	}
	cred := auth[i+len("Credential="):]
	if j := strings.IndexAny(cred, ", "); j >= 0 {
		cred = cred[:j]
	}
	parts := strings.Split(cred, "/")
	if len(parts) < 5 {
		return "", ""
	}
	return parts[3], parts[2]
}

// identify names the call a request makes. body is the request body.
func identify(r *http.Request, body []byte) Call {
	c := Call{Method: r.Method, Path: r.URL.Path}
	c.Service, c.Region = scope(r.Header.Get("Authorization"))
	switch {
	case r.Header.Get("X-Amz-Target") != "":
		// JSON protocols: "Service_20120810.Operation".
		t := r.Header.Get("X-Amz-Target")
		c.Action = t[strings.LastIndex(t, ".")+1:]
	case r.URL.Query().Get("Action") != "":
		c.Action = r.URL.Query().Get("Action")
	case strings.HasPrefix(r.Header.Get("Content-Type"), "application/x-www-form-urlencoded"):
		// Query protocols (EC2, IAM, STS, ELB): Action in the form body.
		if v, err := url.ParseQuery(string(body)); err == nil {
			c.Action = v.Get("Action")
			c.Params = v
			c.Token = v.Get("ClientToken")
		}
	}
	if c.Params == nil && strings.Contains(r.Header.Get("Content-Type"), "json") {
		var v struct {
			ClientRequestToken string `json:"clientRequestToken"`
			ClientToken        string `json:"clientToken"`
		}
		if json.Unmarshal(body, &v) == nil {
			c.Token = v.ClientRequestToken + v.ClientToken
		}
	}
	if c.Action == "" {
		switch c.Service {
		case "eks":
			c.Action = eksAction(r.Method, r.URL.Path)
		case "s3":
			c.Action = s3Action(r.Method, r.URL.Path, r.URL.Query())
		default:
			c.Action = restAction(r.Method, r.URL.Path)
		}
	}
	c.Mutating = isMutating(c.Service, c.Action)
	return c
}

// eksAction maps EKS's REST routes to operation names.
func eksAction(method, path string) string {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	verb := map[string]string{http.MethodGet: "Describe", http.MethodPost: "Create", http.MethodDelete: "Delete", http.MethodPut: "Update"}[method]
	switch {
	case len(seg) == 0 || seg[0] == "":
		return restAction(method, path)
	case seg[0] == "tags":
		return map[string]string{http.MethodGet: "ListTagsForResource", http.MethodPost: "TagResource", http.MethodDelete: "UntagResource"}[method]
	case seg[0] != "clusters":
		return restAction(method, path)
	case len(seg) == 1:
		if method == http.MethodGet {
			return "ListClusters"
		}
		return "CreateCluster"
	case len(seg) == 2:
		return verb + "Cluster"
	case len(seg) == 3 && seg[2] == "update-config":
		return "UpdateClusterConfig"
	case len(seg) == 3 && seg[2] == "updates":
		if method == http.MethodGet {
			return "ListUpdates"
		}
		return "UpdateClusterVersion"
	}
	kinds := map[string]string{"node-groups": "Nodegroup", "addons": "Addon", "access-entries": "AccessEntry",
		"fargate-profiles": "FargateProfile", "identity-provider-configs": "IdentityProviderConfig", "pod-identity-associations": "PodIdentityAssociation"}
	kind, ok := kinds[seg[2]]
	if !ok {
		return restAction(method, path)
	}
	switch {
	case len(seg) == 3 && method == http.MethodGet:
		return "List" + kind + "s"
	case len(seg) == 3:
		return "Create" + kind
	case len(seg) == 4:
		return verb + kind
	case len(seg) == 5 && seg[4] == "update-config":
		return "Update" + kind + "Config"
	case len(seg) == 5 && seg[4] == "update-version":
		return "Update" + kind + "Version"
	}
	return restAction(method, path)
}

// s3Action names the common S3 operations.
func s3Action(method, path string, q url.Values) string {
	object := strings.Count(strings.Trim(path, "/"), "/") >= 1
	switch method {
	case http.MethodGet:
		switch {
		case object:
			return "GetObject"
		case q.Has("versioning"):
			return "GetBucketVersioning"
		}
		return "ListObjectsV2"
	case http.MethodHead:
		if object {
			return "HeadObject"
		}
		return "HeadBucket"
	case http.MethodPut:
		if object {
			return "PutObject"
		}
		return "CreateBucket"
	case http.MethodDelete:
		if object {
			return "DeleteObject"
		}
		return "DeleteBucket"
	case http.MethodPost:
		if q.Has("delete") {
			return "DeleteObjects"
		}
	}
	return restAction(method, path)
}

// restAction names an unknown REST call by method: reads are Get, the
// rest is assumed to change something.
func restAction(method, path string) string {
	switch method {
	case http.MethodGet:
		return "Get " + path
	case http.MethodHead:
		return "Head " + path
	}
	return method + " " + path
}
