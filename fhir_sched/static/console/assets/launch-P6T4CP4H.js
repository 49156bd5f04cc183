import{c as t}from"./chunk-CLCUUFYV.js";import"./chunk-SQE76S5B.js";t().catch(e=>{document.querySelector("main").textContent=`Launch failed: ${e.message||e}`});
