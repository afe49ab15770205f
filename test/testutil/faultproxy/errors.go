package faultproxy

import (
	"encoding/json"
	"encoding/xml"
	"fmt"
	"net/http"
	"strconv"
)

// APIError is an error answer in the shape of the call's service: the
// protocol (EC2 query, AWS query, REST-JSON, JSON, REST-XML) decides the
// body, Status the HTTP status.
type APIError struct {
	Status  int
	Code    string
	Message string
}

// protocol is how a service encodes its errors.
type protocol int

const (
	protoEC2 protocol = iota
	protoQuery
	protoRESTJSON
	protoJSON
	protoRESTXML
)

func protocolOf(c Call, r *http.Request) protocol {
	switch {
	case c.Service == "ec2":
		return protoEC2
	case c.Service == "s3":
		return protoRESTXML
	case r.Header.Get("X-Amz-Target") != "":
		return protoJSON
	}
	switch c.Service {
	case "iam", "sts", "elasticloadbalancing", "autoscaling", "cloudformation", "sns", "rds":
		return protoQuery
	}
	return protoRESTJSON
}

// Throttled is the error each service answers when it throttles a call,
// as the AWS SDKs recognise it: EC2 RequestLimitExceeded (503), the
// query services Throttling (400), EKS and other REST-JSON services
// ThrottlingException (429), JSON services ThrottlingException (400), S3
// SlowDown (503).
func Throttled(c Call, r *http.Request) APIError {
	switch protocolOf(c, r) {
	case protoEC2:
		return APIError{Status: http.StatusServiceUnavailable, Code: "RequestLimitExceeded", Message: "Request limit exceeded."}
	case protoQuery:
		return APIError{Status: http.StatusBadRequest, Code: "Throttling", Message: "Rate exceeded"}
	case protoJSON:
		return APIError{Status: http.StatusBadRequest, Code: "ThrottlingException", Message: "Rate exceeded"}
	case protoRESTXML:
		return APIError{Status: http.StatusServiceUnavailable, Code: "SlowDown", Message: "Please reduce your request rate."}
	}
	return APIError{Status: http.StatusTooManyRequests, Code: "ThrottlingException", Message: "Rate exceeded"}
}

// ServerError is a service's answer to an internal failure (HTTP 500).
func ServerError(c Call, r *http.Request) APIError {
	switch protocolOf(c, r) {
	case protoEC2, protoRESTXML:
		return APIError{Status: http.StatusInternalServerError, Code: "InternalError", Message: "We encountered an internal error. Please try again."}
	case protoQuery, protoJSON:
		return APIError{Status: http.StatusInternalServerError, Code: "InternalFailure", Message: "The request processing has failed because of an unknown error, exception or failure."}
	}
	return APIError{Status: http.StatusInternalServerError, Code: "ServerException", Message: "An internal error occurred."}
}

// write answers the request with the error, encoded as the service does.
func (e APIError) write(w http.ResponseWriter, c Call, r *http.Request) {
	const requestID = "00000000-0000-4000-8000-0000faultpxy"
	var body []byte
	h := w.Header()
	switch protocolOf(c, r) {
	case protoEC2:
		type xmlErr struct {
			Code    string
			Message string
		}
		body, _ = xml.Marshal(struct {
			XMLName   xml.Name `xml:"Response"`
			Errors    []xmlErr `xml:"Errors>Error"`
			RequestID string
		}{Errors: []xmlErr{{e.Code, e.Message}}, RequestID: requestID})
		h.Set("Content-Type", "text/xml;charset=UTF-8")
	case protoQuery:
		body, _ = xml.Marshal(struct {
			XMLName xml.Name `xml:"ErrorResponse"`
			Error   struct {
				Type    string
				Code    string
				Message string
			}
			RequestId string
		}{Error: struct {
			Type    string
			Code    string
			Message string
		}{typeOf(e.Status), e.Code, e.Message}, RequestId: requestID})
		h.Set("Content-Type", "text/xml")
	case protoRESTXML:
		body, _ = xml.Marshal(struct {
			XMLName   xml.Name `xml:"Error"`
			Code      string
			Message   string
			RequestId string
		}{Code: e.Code, Message: e.Message, RequestId: requestID})
		h.Set("Content-Type", "application/xml")
	case protoJSON:
		body, _ = json.Marshal(map[string]string{"__type": e.Code, "message": e.Message})
		h.Set("Content-Type", "application/x-amz-json-1.1")
	default:
		body, _ = json.Marshal(map[string]string{"message": e.Message})
		h.Set("Content-Type", "application/json")
		h.Set("X-Amzn-Errortype", e.Code)
	}
	h.Set("X-Amzn-Requestid", requestID)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(e.Status)
	_, _ = w.Write(body)
}

func typeOf(status int) string {
	if status >= 500 {
		return "Receiver"
	}
	return "Sender"
}

// String renders the error for logs.
func (e APIError) String() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }
