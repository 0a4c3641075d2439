// The path of hops (client/path.h): what CheckPathSpec builds and refuses, and the rule that a
// provider serves at most one hop of a path.

#include "client/path.h"

#include <gtest/gtest.h>

#include "client/client_runtime.h"

namespace dvpn::tunnel_client {
namespace {

HopProvider ProviderOf(uint8_t n) {
  HopProvider p{};
  p.fill(n);
  return p;
}

TEST(Path, OneHopIsBuilt) {
  EXPECT_TRUE(CheckPathSpec(PathSpec{}).has_value());
  EXPECT_EQ(PathSpec{}.hops, 1u);
  EXPECT_TRUE(CheckPathSpec(PathSpec{.hops = 1}).has_value());
}

TEST(Path, ZeroHopsAreRefused) {
  auto checked = CheckPathSpec(PathSpec{.hops = 0});
  ASSERT_FALSE(checked.has_value());
  EXPECT_EQ(checked.error().code, PathErrc::kNoHops);
}

TEST(Path, MoreHopsAreRefusedAsNotBuilt) {
  for (uint32_t hops : {2u, 3u, 100u}) {
    auto checked = CheckPathSpec(PathSpec{.hops = hops});
    ASSERT_FALSE(checked.has_value()) << hops;
    EXPECT_EQ(checked.error().code, PathErrc::kMultiHopNotBuilt);
    EXPECT_NE(checked.error().message.find("multi-hop is not built yet"), std::string::npos)
        << checked.error().message;
    EXPECT_NE(checked.error().message.find(std::to_string(hops) + " hops"), std::string::npos)
        << checked.error().message;
  }
}

TEST(Path, RuntimeRefusesAPathItCannotBuild) {
  // Refused before anything starts: no keeper, no socket, no thread.
  for (uint32_t hops : {0u, 2u}) {
    ClientRuntimeConfig config;
    config.path.hops = hops;
    auto runtime = ClientRuntime::Start(std::move(config));
    ASSERT_FALSE(runtime.has_value()) << hops;
    EXPECT_EQ(runtime.error().message, CheckPathSpec(PathSpec{.hops = hops}).error().message);
  }
}

TEST(PathProviders, AProviderServesOneHopOfAPath) {
  PathProviders path(3);
  EXPECT_EQ(path.hops(), 3u);
  ASSERT_TRUE(path.Claim(0, ProviderOf(1)).has_value());
  EXPECT_FALSE(path.HeldByOtherHop(0, ProviderOf(1)));
  EXPECT_TRUE(path.HeldByOtherHop(1, ProviderOf(1)));
  EXPECT_TRUE(path.HeldByOtherHop(2, ProviderOf(1)));

  auto repeated = path.Claim(2, ProviderOf(1));
  ASSERT_FALSE(repeated.has_value());
  EXPECT_EQ(repeated.error().code, PathErrc::kProviderRepeated);
  EXPECT_NE(repeated.error().message.find("hop 1"), std::string::npos) << repeated.error().message;
  EXPECT_FALSE(path.HeldByOtherHop(0, ProviderOf(1)));  // the refusal changed nothing

  ASSERT_TRUE(path.Claim(2, ProviderOf(2)).has_value());
  ASSERT_TRUE(path.Claim(1, ProviderOf(3)).has_value());
  EXPECT_FALSE(path.Claim(0, ProviderOf(3)).has_value());
  EXPECT_FALSE(path.Claim(1, ProviderOf(2)).has_value());
}

TEST(PathProviders, AHopMayKeepOrChangeItsOwnProvider) {
  PathProviders path(2);
  ASSERT_TRUE(path.Claim(0, ProviderOf(1)).has_value());
  EXPECT_TRUE(path.Claim(0, ProviderOf(1)).has_value());  // the same hop again
  ASSERT_TRUE(path.Claim(0, ProviderOf(2)).has_value());  // replaces provider 1
  EXPECT_TRUE(path.Claim(1, ProviderOf(1)).has_value());
  EXPECT_FALSE(path.Claim(1, ProviderOf(2)).has_value());
}

TEST(PathProviders, AReleasedProviderMayServeAnotherHop) {
  PathProviders path(2);
  ASSERT_TRUE(path.Claim(0, ProviderOf(7)).has_value());
  ASSERT_FALSE(path.Claim(1, ProviderOf(7)).has_value());
  path.Release(0);
  EXPECT_FALSE(path.HeldByOtherHop(1, ProviderOf(7)));
  EXPECT_TRUE(path.Claim(1, ProviderOf(7)).has_value());
}

TEST(PathProviders, OneHopPathHasNoOtherHop) {
  PathProviders path(1);
  ASSERT_TRUE(path.Claim(0, ProviderOf(1)).has_value());
  EXPECT_FALSE(path.HeldByOtherHop(0, ProviderOf(1)));
  EXPECT_TRUE(path.Claim(0, ProviderOf(1)).has_value());
}

}  // namespace
}  // namespace dvpn::tunnel_client
