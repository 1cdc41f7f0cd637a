//! Logging macros: `defmt` in the firmware image, nothing in host builds (tests, the device
//! model), so host builds need no global logger. Arguments are still evaluated by the type
//! checker in both builds.
#![allow(unused_macros)]

#[cfg(feature = "defmt")]
macro_rules! info { ($($t:tt)*) => { ::defmt::info!($($t)*) }; }
#[cfg(feature = "defmt")]
macro_rules! warn { ($($t:tt)*) => { ::defmt::warn!($($t)*) }; }
#[cfg(feature = "defmt")]
macro_rules! error { ($($t:tt)*) => { ::defmt::error!($($t)*) }; }

#[cfg(not(feature = "defmt"))]
macro_rules! info { ($fmt:literal $(, $a:expr)* $(,)?) => {{ $(let _ = &$a;)* }}; }
#[cfg(not(feature = "defmt"))]
macro_rules! warn { ($fmt:literal $(, $a:expr)* $(,)?) => {{ $(let _ = &$a;)* }}; }
#[cfg(not(feature = "defmt"))]
macro_rules! error { ($fmt:literal $(, $a:expr)* $(,)?) => {{ $(let _ = &$a;)* }}; }
