// dtype family: bf16 / fp16 <-> fp32 conversions of lighthouse/dtype.h.
// Widening is checked on all 65,536 bit patterns against an independent
// decoding; narrowing against a nearest-value search over every
// representable value (ties to even, overflow to infinity), on every
// neighbour of every 16-bit value and its halfway points, plus random floats.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "lighthouse/dtype.h"

namespace {

using lighthouse::bf16_t;
using lighthouse::f16_t;

float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// A 16-bit format: 1 sign bit, `exp_bits` exponent bits, the rest mantissa.
struct Format {
  int exp_bits, mant_bits;
  int bias() const { return (1 << (exp_bits - 1)) - 1; }
  uint32_t inf_bits() const { return ((1u << exp_bits) - 1u) << mant_bits; }

  // Value of a non-negative pattern from the IEEE definition; the infinity
  // pattern decodes as 2^(emax + 1), the next value of an unbounded exponent
  // range, so nearest-value rounding overflows exactly where IEEE says.
  long double magnitude(uint32_t bits) const {
    const uint32_t e = bits >> mant_bits, f = bits & ((1u << mant_bits) - 1u);
    if (e == 0) return std::ldexp(static_cast<long double>(f), 1 - bias() - mant_bits);
    return std::ldexp(static_cast<long double>((1u << mant_bits) | f), static_cast<int>(e) - bias() - mant_bits);
  }

  // The correctly rounded pattern of x: nearest magnitude, ties to the even
  // pattern; anything at or past the infinity magnitude is infinity.
  uint32_t round(float x) const {
    const uint32_t sign = (bits_of(x) >> 31) << (exp_bits + mant_bits);
    const long double a = std::fabs(static_cast<long double>(x));
    if (std::isinf(x) || a >= magnitude(inf_bits())) return sign | inf_bits();
    uint32_t lo = 0, hi = inf_bits();  // magnitude(lo) <= a < magnitude(hi)
    while (hi - lo > 1) {
      const uint32_t mid = (lo + hi) / 2;
      (magnitude(mid) <= a ? lo : hi) = mid;
    }
    const long double below = a - magnitude(lo), above = magnitude(hi) - a;
    const uint32_t pick = below < above ? lo : (above < below ? hi : ((lo & 1u) ? hi : lo));
    return sign | pick;
  }
};

constexpr Format kBf16{8, 7};
constexpr Format kF16{5, 10};

uint32_t narrow_bf16(float x) { return lighthouse::from_float<bf16_t>(x).bits; }
uint32_t narrow_f16(float x) { return lighthouse::from_float<f16_t>(x).bits; }

bool is_nan16(const Format& f, uint32_t bits) {
  return (bits & f.inf_bits()) == f.inf_bits() && (bits & ((1u << f.mant_bits) - 1u)) != 0;
}

TEST(DType, WideningMatchesIeeeDecoding) {
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const float b = lighthouse::to_float(bf16_t{static_cast<uint16_t>(bits)});
    ASSERT_EQ(bits_of(b), bits << 16) << "bf16 0x" << std::hex << bits;
    const float h = lighthouse::to_float(f16_t{static_cast<uint16_t>(bits)});
    const uint32_t magnitude = bits & 0x7fffu;
    if (is_nan16(kF16, magnitude)) {
      ASSERT_TRUE(std::isnan(h)) << "f16 0x" << std::hex << bits;
      ASSERT_EQ(std::signbit(h), (bits & 0x8000u) != 0) << "f16 0x" << std::hex << bits;
      continue;
    }
    const long double want = (bits & 0x8000u) ? -kF16.magnitude(magnitude) : kF16.magnitude(magnitude);
    if (magnitude == kF16.inf_bits()) {
      ASSERT_TRUE(std::isinf(h) && std::signbit(h) == ((bits & 0x8000u) != 0)) << "f16 0x" << std::hex << bits;
      continue;
    }
    ASSERT_EQ(static_cast<long double>(h), want) << "f16 0x" << std::hex << bits;
    ASSERT_EQ(std::signbit(h), (bits & 0x8000u) != 0) << "f16 0x" << std::hex << bits;
  }
}

TEST(DType, RoundTripOfEveryPattern) {
  int nans = 0;
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    const uint16_t b = static_cast<uint16_t>(bits);
    const uint32_t bf = narrow_bf16(lighthouse::to_float(bf16_t{b}));
    const uint32_t hf = narrow_f16(lighthouse::to_float(f16_t{b}));
    if (is_nan16(kBf16, bits & 0x7fffu)) {
      // NaN stays NaN with its sign (it may be quieted).
      ASSERT_TRUE(is_nan16(kBf16, bf & 0x7fffu) && (bf & 0x8000u) == (bits & 0x8000u)) << std::hex << bits;
    } else {
      ASSERT_EQ(bf, bits) << "bf16 0x" << std::hex << bits;
    }
    if (is_nan16(kF16, bits & 0x7fffu)) {
      ASSERT_TRUE(is_nan16(kF16, hf & 0x7fffu) && (hf & 0x8000u) == (bits & 0x8000u)) << std::hex << bits;
      ++nans;
    } else {
      ASSERT_EQ(hf, bits) << "f16 0x" << std::hex << bits;
    }
  }
  EXPECT_EQ(nans, 2 * 1023);
}

// Floats around every 16-bit value and every halfway point between
// neighbours: exactly on them and a float ulp to either side.
std::vector<float> neighbourhood_floats(const Format& f) {
  std::vector<float> out;
  for (uint32_t bits = 0; bits < f.inf_bits(); ++bits) {
    const long double lo = f.magnitude(bits), hi = f.magnitude(bits + 1);
    for (long double centre : {lo, (lo + hi) / 2}) {
      const float x = static_cast<float>(centre);
      if (static_cast<long double>(x) != centre) continue;  // not a float (never for these formats)
      for (float y : {std::nextafter(x, 0.0f), x, std::nextafter(x, std::numeric_limits<float>::infinity())}) {
        out.push_back(y);
        out.push_back(-y);
      }
    }
  }
  return out;
}

void expect_rounding(const Format& f, uint32_t (*narrow)(float), const char* name) {
  std::vector<float> xs = neighbourhood_floats(f);
  std::mt19937_64 rng(0xd7e5);
  for (int i = 0; i < 1 << 20; ++i) {
    const float x = float_of(static_cast<uint32_t>(rng()));
    if (!std::isnan(x)) xs.push_back(x);
  }
  const float extremes[] = {0.0f, -0.0f, 65504.0f, 65519.99f, 65520.0f, 3.0e38f, 3.4028235e38f,
                            std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                            std::numeric_limits<float>::denorm_min(), std::numeric_limits<float>::min()};
  xs.insert(xs.end(), std::begin(extremes), std::end(extremes));
  int64_t checked = 0;
  for (float x : xs) {
    ASSERT_EQ(narrow(x), f.round(x)) << name << " of " << x << " (bits 0x" << std::hex << bits_of(x) << ")";
    ++checked;
  }
  EXPECT_GT(checked, 1 << 20);
}

TEST(DType, Bf16RoundsToNearestEven) { expect_rounding(kBf16, narrow_bf16, "bf16"); }

TEST(DType, F16RoundsToNearestEvenWithSubnormalsAndOverflow) { expect_rounding(kF16, narrow_f16, "f16"); }

TEST(DType, NanStaysNan) {
  for (uint32_t payload : {0x7fc00000u, 0x7f800001u, 0x7fbfffffu, 0x7f80ffffu, 0xffc00000u, 0xff800001u}) {
    const float x = float_of(payload);
    const uint32_t b = narrow_bf16(x), h = narrow_f16(x);
    EXPECT_TRUE(is_nan16(kBf16, b & 0x7fffu)) << std::hex << payload;
    EXPECT_TRUE(is_nan16(kF16, h & 0x7fffu)) << std::hex << payload;
    EXPECT_TRUE(std::isnan(lighthouse::to_float(bf16_t{static_cast<uint16_t>(b)})));
    EXPECT_TRUE(std::isnan(lighthouse::to_float(f16_t{static_cast<uint16_t>(h)})));
  }
}

TEST(DType, ElementSizesAndNames) {
  EXPECT_EQ(lighthouse::element_size(lighthouse::DType::kFloat32), 4);
  EXPECT_EQ(lighthouse::element_size(lighthouse::DType::kBFloat16), 2);
  EXPECT_EQ(lighthouse::element_size(lighthouse::DType::kFloat16), 2);
  EXPECT_EQ(lighthouse::dtype_name(lighthouse::DType::kBFloat16), "bfloat16");
}

}  // namespace
