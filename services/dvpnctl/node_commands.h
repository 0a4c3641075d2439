#pragma once
// dvpnctl's commands that talk to a dvpn-node instead of the ledger: `offers` (the node's
// OfferBook, best first) and `earnings` (a seller node's NodeControl). Private to
// services/dvpnctl; docs/dvpnctl.md, "Node commands".

#include <cstdint>
#include <string>

#include "common/amount.h"
#include "services/dvpnctl/cli.h"

namespace dvpn::ctl {

struct OffersQuery {
  std::string max_price;  // credits per MB; empty: any
  std::string region;     // empty: any
  uint32_t limit = 20;
};

// Lists the offers the node at `node` (HOST:PORT of its gRPC port) knows, best first.
CliResult<void> ListOffers(const Options& options, const std::string& node,
                           const OffersQuery& query);
// A seller node's earnings: settled, unsettled, lost, settlement counts, channels.
CliResult<void> ShowEarnings(const Options& options, const std::string& node);

}  // namespace dvpn::ctl
