package awsx

import (
	"errors"
	"strings"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// Code returns the AWS error code of err ("InvalidVpcID.NotFound",
// "NoSuchEntity", ...), or "".
func Code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// Message returns the AWS error message of err, or err's text.
func Message(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorMessage()
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// HTTPStatus returns the HTTP status of a failed call, or 0.
func HTTPStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// HasCode reports whether err carries one of the codes.
func HasCode(err error, codes ...string) bool {
	c := Code(err)
	for _, x := range codes {
		if c == x {
			return true
		}
	}
	return false
}

// IsNotFound reports whether err says the resource does not exist, for any
// of the services kforge uses.
func IsNotFound(err error) bool {
	if err == nil {
		return false
	}
	c := Code(err)
	switch {
	case strings.HasSuffix(c, ".NotFound"), strings.HasSuffix(c, "NotFound"),
		c == "NoSuchEntity", c == "ResourceNotFoundException", c == "NoSuchKey", c == "NoSuchBucket",
		c == "InvalidGroup.NotFound", c == "InvalidKeyPair.NotFound", c == "LoadBalancerNotFound",
		c == "TargetGroupNotFound":
		return true
	}
	return false
}

// IsAccessDenied reports whether err is a permission failure. Some
// emulator and service bodies are not decoded into typed errors, so the
// HTTP status counts too.
func IsAccessDenied(err error) bool {
	c := Code(err)
	if c == "AccessDenied" || c == "AccessDeniedException" || c == "UnauthorizedOperation" || c == "AuthFailure" ||
		c == "Client.UnauthorizedOperation" {
		return true
	}
	// Some bodies (IAM, STS and ELBv2 under the emulator's enforcement)
	// are not decoded into a code: the status says it.
	return HTTPStatus(err) == 403 && (c == "" || c == "UnknownError")
}

// IsDependency reports whether AWS refused a delete because something still
// uses the resource.
func IsDependency(err error) bool {
	c := Code(err)
	return c == "DependencyViolation" || c == "DeleteConflict" || c == "ResourceInUse" || c == "ResourceInUseException"
}

// IsBadCredentials reports whether err says the keys are invalid.
func IsBadCredentials(err error) bool {
	c := Code(err)
	return c == "InvalidClientTokenId" || c == "SignatureDoesNotMatch" || c == "UnrecognizedClientException" ||
		c == "AuthFailure" || c == "ExpiredToken" || c == "InvalidAccessKeyId"
}

// IsIAMPropagation reports whether err is IAM's eventual consistency as
// other services see it: a role or instance profile created moments ago
// that they cannot see or assume yet.
func IsIAMPropagation(err error) bool {
	if err == nil {
		return false
	}
	m := strings.ToLower(Message(err))
	c := Code(err)
	switch {
	case c == "InvalidParameterValue" && strings.Contains(m, "instance profile"):
		return true
	case strings.Contains(m, "invalid iam instance profile"):
		return true
	case (c == "InvalidParameterException" || c == "InvalidRequestException" || c == "AccessDeniedException") &&
		(strings.Contains(m, "could not be assumed") || strings.Contains(m, "cannot be assumed") || strings.Contains(m, "role") && strings.Contains(m, "does not exist")):
		return true
	}
	return false
}
