//! Plain-old-data map types.

/// Declares `#[repr(C)]` map types that are `bytemuck::Pod` (so the compiler rejects any
/// implicit padding), `aya::Pod` on the user side, and of an asserted size.
#[macro_export]
macro_rules! map_types {
    ($(
        $(#[$meta:meta])*
        pub struct $name:ident [$size:expr] { $($body:tt)* }
    )*) => {$(
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name { $($body)* }

        const _: () = assert!(core::mem::size_of::<$name>() == $size);

        // SAFETY: bytemuck::Pod is derived above, which proves the type has no padding and
        // every bit pattern is valid.
        #[cfg(feature = "user")]
        unsafe impl aya::Pod for $name {}
    )*};
}
