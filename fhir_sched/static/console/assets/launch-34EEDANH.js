import{c as t}from"./chunk-46G6MOPN.js";import"./chunk-SQE76S5B.js";t().catch(e=>{document.querySelector("main").textContent=`Launch failed: ${e.message||e}`});
