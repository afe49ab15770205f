package cost

import "fmt"

// TableDate is when the prices of Table were read from AWS's published
// on-demand prices (us-east-1, Linux, shared tenancy).
const TableDate = "2025-06"

// TableRegion is the region whose prices the table holds.
const TableRegion = "us-east-1"

// instanceHourly are on-demand Linux prices of us-east-1, USD per hour.
var instanceHourly = map[string]float64{
	"t3.nano": 0.0052, "t3.micro": 0.0104, "t3.small": 0.0208, "t3.medium": 0.0416,
	"t3.large": 0.0832, "t3.xlarge": 0.1664, "t3.2xlarge": 0.3328,
	"t3a.micro": 0.0094, "t3a.small": 0.0188, "t3a.medium": 0.0376, "t3a.large": 0.0752,
	"t3a.xlarge": 0.1504, "t3a.2xlarge": 0.3008,
	"t4g.nano": 0.0042, "t4g.micro": 0.0084, "t4g.small": 0.0168, "t4g.medium": 0.0336,
	"t4g.large": 0.0672, "t4g.xlarge": 0.1344, "t4g.2xlarge": 0.2688,
	"m5.large": 0.096, "m5.xlarge": 0.192, "m5.2xlarge": 0.384, "m5.4xlarge": 0.768,
	"m6i.large": 0.096, "m6i.xlarge": 0.192, "m6i.2xlarge": 0.384, "m6i.4xlarge": 0.768,
	"m7i.large": 0.1008, "m7i.xlarge": 0.2016, "m7i.2xlarge": 0.4032,
	"m6g.large": 0.077, "m6g.xlarge": 0.154, "m6g.2xlarge": 0.308,
	"m7g.large": 0.0816, "m7g.xlarge": 0.1632, "m7g.2xlarge": 0.3264,
	"c5.large": 0.085, "c5.xlarge": 0.17, "c5.2xlarge": 0.34,
	"c6i.large": 0.085, "c6i.xlarge": 0.17, "c6i.2xlarge": 0.34,
	"c7g.large": 0.0725, "c7g.xlarge": 0.145,
	"r5.large": 0.126, "r5.xlarge": 0.252, "r6i.large": 0.126, "r6i.xlarge": 0.252,
}

// volumeGiBMonth are EBS prices of us-east-1, USD per GiB-month.
var volumeGiBMonth = map[string]float64{"gp3": 0.08, "gp2": 0.10}

// Other prices of us-east-1, USD per hour.
const (
	publicIPv4Hourly = 0.005
	eksHourly        = 0.10 // standard support; extended support costs more
)

// table is the Prices of the table shipped with kforge.
type table struct{}

// Table is the price table shipped with kforge.
var Table Prices = table{}

func (table) Hourly(_, kind, typ string) (float64, bool) {
	switch kind {
	case KindInstance:
		p, ok := instanceHourly[typ]
		return p, ok
	case KindVolume:
		p, ok := volumeGiBMonth[typ]
		return p / HoursPerMonth, ok
	case KindPublicIPv4:
		return publicIPv4Hourly, true
	case KindEKS:
		return eksHourly, true
	}
	return 0, false
}

func (table) Source(region string) (string, bool) {
	return fmt.Sprintf("kforge's price table of %s (%s on-demand prices)", TableDate, TableRegion), region != TableRegion
}
