package iampolicy

// ActionOf returns the IAM action that authorizes an AWS SDK operation,
// from the SDK's service ID ("EC2", "Elastic Load Balancing v2") and
// operation name ("RunInstances"), as KFORGE_AWS_TRACE records them. For
// the services kforge uses, the action is the operation's name under the
// service's IAM prefix. ok is false for a service kforge does not know.
func ActionOf(serviceID, operation string) (action string, ok bool) {
	prefix, ok := servicePrefix(serviceID)
	if !ok || operation == "" {
		return "", false
	}
	return prefix + ":" + operation, true
}

// servicePrefix maps SDK service IDs to IAM service prefixes.
func servicePrefix(serviceID string) (string, bool) {
	switch serviceID {
	case "EC2":
		return "ec2", true
	case "IAM":
		return "iam", true
	case "EKS":
		return "eks", true
	case "STS":
		return "sts", true
	case "Elastic Load Balancing", "Elastic Load Balancing v2":
		return "elasticloadbalancing", true
	case "Service Quotas":
		return "servicequotas", true
	case "S3":
		return "s3", true
	case "DynamoDB":
		return "dynamodb", true
	}
	return "", false
}
